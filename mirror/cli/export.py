"""``ctmirror export``: the mirror's tables as Parquet, CSV, NDJSON or a plain SQLite file."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime
from pathlib import Path

import click

from mirror import export as exports
from mirror.cli import output
from mirror.cli.context import Context, pass_ctx, utc


@click.command("export")
@click.argument("out", type=click.Path(path_type=Path))
@click.option(
    "--format", "fmt", type=click.Choice(list(exports.FORMATS)), default="parquet",
    show_default=True,
    help="parquet, csv, ndjson: a directory OUT with a file per table; sqlite: one file OUT.",
)  # fmt: skip
@click.option(
    "--table", "tables", multiple=True, type=click.Choice(list(exports.TABLES)),
    help="Only this table (repeatable; default: all four).",
)  # fmt: skip
@click.option("--nct", "nct_ids", multiple=True, help="Only this study (repeatable).")
@click.option("--watch", "watch_name", help="Only studies of this watch.")
@click.option("--field", "fields", multiple=True, help="Changes of fields matching this glob.")
@click.option("--class", "classes", multiple=True, help="Versions with a change class glob.")
@click.option("--since", type=click.DateTime(), help="Observed at or after (UTC): incremental.")
@click.option("--until", type=click.DateTime(), help="Observed before (UTC).")
@click.option(
    "--initial/--no-initial", default=None,
    help="Only the first-sight events / leave them out (default: both).",
)  # fmt: skip
@click.option("--force", is_flag=True, help="Replace the tables of an earlier export at OUT.")
@click.option(
    "--workers", type=click.IntRange(min=1),
    help="Processes reading a Parquet export's changes (default: one per CPU on a large feed).",
)  # fmt: skip
@pass_ctx
def export_command(
    c: Context, out: Path, fmt: str, tables: tuple[str, ...], nct_ids: tuple[str, ...],
    watch_name: str | None, fields: tuple[str, ...], classes: tuple[str, ...],
    since: datetime | None, until: datetime | None, initial: bool | None, force: bool,
    workers: int | None,
) -> None:  # fmt: skip
    """Export studies, versions, changes (first sight included) and change classes to OUT.

    With --since (and --until) only what was observed in that window: a daily job writes each
    day to its own OUT, and the days together are the whole export.
    """
    flt = exports.ExportFilter(
        nct_ids=nct_ids, watch=watch_name, fields=fields, classes=classes,
        since=utc(since), until=utc(until), initial=initial,
    )  # fmt: skip
    db = c.reader.db
    with _progress() as report:
        summary = exports.export(
            db,
            out,
            fmt,
            flt,
            tables or tuple(exports.TABLES),
            force=force,
            progress=report,
            workers=workers,
        )
    click.echo(summary.line())


@contextmanager
def _progress() -> Iterator[Callable[[str, int | None, int], None]]:
    """A progress bar per table on a terminal (rows, rows/s); nothing otherwise."""
    with ExitStack() as stack:
        bar: list[Callable[[int | None, int], None]] = []
        shown: list[str] = []

        def report(table: str, total: int | None, done: int) -> None:
            if not shown or shown[-1] != table:
                stack.close()
                shown.append(table)
                bar[:] = [stack.enter_context(output.progress(table, unit="rows"))]
            bar[0](total, done)

        yield report
