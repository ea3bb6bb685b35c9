"""Writing an export's tables: Parquet (pyarrow), CSV, NDJSON, a plain SQLite file.

A writer takes a table's rows in batches and never holds more than one: Parquet writes each
batch as a row group, the SQLite file inserts it. Files are written under a ``.partial`` name
and renamed when complete, so a failed or interrupted export leaves no half table behind.
"""

from __future__ import annotations

import csv
import os
import sqlite3
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any, Protocol

import orjson

from mirror.errors import UsageError
from mirror.export.tables import Columns, Table

FORMATS = ("parquet", "csv", "ndjson", "sqlite")
EXTENSIONS = {"parquet": "parquet", "csv": "csv", "ndjson": "ndjson"}

# Indexes of the SQLite file: what people filter and join on.
SQLITE_INDEXES: dict[str, list[tuple[str, ...]]] = {
    "studies": [("nct_id",), ("overall_status",)],
    "versions": [("nct_id", "version"), ("observed_at",)],
    "changes": [("nct_id", "id"), ("field", "id"), ("observed_at",)],
    "classes": [("nct_id", "version"), ("name",)],
}
SQLITE_TYPES = {"int": "INTEGER", "text": "TEXT", "bool": "INTEGER", "time": "TEXT"}


class TableWriter(Protocol):
    def write(self, columns: Columns) -> None:
        """One batch, as one list of values per column."""

    def close(self) -> None: ...


def instant(value: datetime | None) -> str | None:
    """A UTC instant as the feed writes it: ``2026-06-01T07:00:35Z``."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="seconds")[:19] + "Z"


def json_text(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _as_text(kind: str, values: list[Any]) -> list[Any]:
    """A column for a text-only format (CSV, SQLite): JSON and instants as text."""
    if kind == "json":
        return [json_text(v) for v in values]
    if kind == "time":
        return [instant(v) for v in values]
    return values


# -- one file per table ---------------------------------------------------------------------


def partial(path: Path) -> Path:
    return path.with_name(path.name + ".partial")


class ParquetTable:
    """A Parquet file written one row group per batch (pyarrow)."""

    def __init__(self, path: Path, table: Table) -> None:
        _, pq = _pyarrow()
        self.arrow = ArrowBatches(table)
        self.writer = pq.ParquetWriter(str(path), self.arrow.schema, compression="zstd")

    def write(self, columns: Columns) -> None:
        self.write_arrow(self.arrow.batch(columns))

    def write_arrow(self, batch: Any) -> None:
        """A batch already made into an Arrow record batch (by :class:`ArrowBatches`)."""
        self.writer.write_batch(batch)

    def close(self) -> None:
        self.writer.close()


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


class ArrowBatches:
    """Batches of a table's columns as Arrow record batches of its schema."""

    def __init__(self, table: Table) -> None:
        pa, _ = _pyarrow()
        types = {
            "int": pa.int64(), "text": pa.string(), "bool": pa.bool_(),
            "time": pa.timestamp("us", tz="UTC"), "json": pa.string(), "raw": pa.string(),
        }  # fmt: skip
        self.pa, self.columns = pa, table.columns
        self.schema = pa.schema([(c.name, types[c.kind]) for c in table.columns])

    def batch(self, columns: Columns) -> Any:
        arrays = []
        for n, (column, values) in enumerate(zip(self.columns, columns, strict=True)):
            if column.kind == "json":  # bytes are taken as UTF-8 text: no decode needed
                values = [None if v is None else orjson.dumps(v) for v in values]
            elif column.kind == "time":
                values = _micros(values)
            arrays.append(self.pa.array(values, type=self.schema.field(n).type))
        return self.pa.record_batch(arrays, schema=self.schema)


def _micros(values: list[datetime | None]) -> list[int | None]:
    """Instants as microseconds since the epoch (Arrow's fast path); the events of a block
    share one datetime object, so the last conversion is reused."""
    found: list[int | None] = []
    last: datetime | None = None
    micros: int | None = None
    for value in values:
        if value is not last:
            last = value
            micros = None if value is None else (value - _EPOCH) // _MICROSECOND
        found.append(micros)
    return found


def _pyarrow() -> tuple[Any, Any]:
    # Imported when a Parquet file is written: other commands do not pay for it.
    import pyarrow as pa
    import pyarrow.parquet as pq

    return pa, pq


class CsvTable:
    """A CSV file with a header line (written even when the table is empty)."""

    def __init__(self, path: Path, table: Table) -> None:
        self.file: IO[str] = open(path, "w", newline="", encoding="utf-8")  # noqa: SIM115
        self.kinds = [c.kind for c in table.columns]
        self.writer = csv.writer(self.file, lineterminator="\n")
        self.writer.writerow([c.name for c in table.columns])

    def write(self, columns: Columns) -> None:
        texts = [_as_text(k, values) for k, values in zip(self.kinds, columns, strict=True)]
        self.writer.writerows(zip(*texts, strict=True))

    def close(self) -> None:
        self.file.close()


class NdjsonTable:
    """One JSON object per line; JSON values embedded as values, not text."""

    def __init__(self, path: Path, table: Table) -> None:
        self.file: IO[bytes] = open(path, "wb")  # noqa: SIM115
        self.columns = table.columns

    def write(self, columns: Columns) -> None:
        values = []
        for column, column_values in zip(self.columns, columns, strict=True):
            if column.kind == "time":
                column_values = [instant(v) for v in column_values]
            elif column.kind == "raw":
                column_values = [None if v is None else orjson.Fragment(v) for v in column_values]
            values.append(column_values)
        names = [c.name for c in self.columns]
        lines = [
            orjson.dumps(dict(zip(names, row, strict=True))) for row in zip(*values, strict=True)
        ]
        if lines:
            self.file.write(b"\n".join(lines) + b"\n")

    def close(self) -> None:
        self.file.close()


FILE_WRITERS: dict[str, Callable[[Path, Table], TableWriter]] = {
    "parquet": ParquetTable, "csv": CsvTable, "ndjson": NdjsonTable,
}  # fmt: skip


# -- one SQLite file ------------------------------------------------------------------------


class SqliteFile:
    """A plain SQLite database (standard library): one table per export table, values as
    SQLite's own types (JSON as text, instants as ISO text), indexes made at the end."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode = OFF")  # written whole or thrown away
        self.conn.execute("PRAGMA synchronous = OFF")
        self.conn.execute("BEGIN")
        self.tables: list[str] = []

    def table(self, table: Table) -> SqliteTable:
        columns = ", ".join(f'"{c.name}" {SQLITE_TYPES.get(c.kind, "TEXT")}' for c in table.columns)
        self.conn.execute(f'CREATE TABLE "{table.name}" ({columns})')
        self.tables.append(table.name)
        return SqliteTable(self.conn, table)

    def finish(self) -> None:
        for name in self.tables:
            for columns in SQLITE_INDEXES.get(name, []):
                listed = ", ".join(f'"{c}"' for c in columns)
                index = f"ix_{name}_{'_'.join(columns)}"
                self.conn.execute(f'CREATE INDEX "{index}" ON "{name}" ({listed})')
        self.conn.execute("COMMIT")
        self.conn.close()

    def abandon(self) -> None:
        self.conn.close()


class SqliteTable:
    def __init__(self, conn: sqlite3.Connection, table: Table) -> None:
        self.conn, self.kinds = conn, [c.kind for c in table.columns]
        marks = ", ".join("?" for _ in table.columns)
        self.insert = f'INSERT INTO "{table.name}" VALUES ({marks})'

    def write(self, columns: Columns) -> None:
        texts = [_as_text(k, values) for k, values in zip(self.kinds, columns, strict=True)]
        self.conn.executemany(self.insert, zip(*texts, strict=True))

    def close(self) -> None:
        pass


def check_writable(out: Path, fmt: str, tables: Sequence[str], *, force: bool) -> list[Path]:
    """The files the export will write; UsageError, before any work, when ``out`` cannot be
    written or would overwrite an export without ``force``."""
    try:
        if fmt == "sqlite":
            targets = [out]
            folder = out.parent
            if out.is_dir():
                raise UsageError(f"{out} is a directory: --format sqlite writes one file")
        else:
            if out.exists() and not out.is_dir():
                raise UsageError(f"{out} is a file: --format {fmt} writes a directory of files")
            targets = [out / f"{t}.{EXTENSIONS[fmt]}" for t in tables]
            folder = out if out.is_dir() else out.parent
        existing = [t for t in targets if t.exists()]
        if existing and not force:
            raise UsageError(f"{existing[0]} exists (use --force to replace it)")
        if not folder.is_dir():
            raise UsageError(f"{folder} does not exist")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise UsageError(f"cannot write to {folder}: permission denied")
    except OSError as exc:  # a path the file system refuses outright (a name too long, …)
        raise UsageError(f"cannot write to {out}: {exc.strerror or exc}") from None
    return targets
