"""How the CLI prints: tables for people, JSON / NDJSON / CSV for programs, progress on a tty."""

from __future__ import annotations

import csv
import itertools
import os
import shutil
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import click
import orjson


def emit(rows: Sequence[Mapping[str, Any]], fmt: str, columns: Sequence[str]) -> None:
    """Print ``rows``: ``table`` shows ``columns``; the machine formats carry every key."""
    if fmt == "json":
        click.echo(orjson.dumps(list(rows), option=orjson.OPT_INDENT_2).decode())
    elif fmt == "ndjson":
        for row in rows:
            click.echo(orjson.dumps(row).decode())
    elif fmt == "csv":
        _csv(rows)
    else:
        _table(rows, columns)


TABLE_SAMPLE = 500  # rows a streamed table reads before fixing its column widths


def stream(
    rows: Iterable[Mapping[str, Any]],
    fmt: str,
    columns: Sequence[str],
    keys: Sequence[str],
    fit: str | None = None,
) -> int:
    """Print ``rows`` as they come (flat memory whatever their number); how many were printed.

    ``keys``: every key of a row (CSV's header, printed even when there are no rows);
    ``table`` shows ``columns`` within the terminal's width, ``fit`` (a column) taking what
    the others leave and being cut to it.
    """
    try:
        return _stream(rows, fmt, columns, keys, fit)
    except BrokenPipeError:  # the reader left (`| head`): stop quietly, as Python's docs advise
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        raise SystemExit(1) from None


def _stream(
    rows: Iterable[Mapping[str, Any]],
    fmt: str,
    columns: Sequence[str],
    keys: Sequence[str],
    fit: str | None,
) -> int:
    out = sys.stdout
    count = 0
    if fmt == "json":
        for count, row in enumerate(rows, 1):
            item = orjson.dumps(row, option=orjson.OPT_INDENT_2).decode().replace("\n", "\n  ")
            out.write(("[\n  " if count == 1 else ",\n  ") + item)
        out.write("\n]\n" if count else "[]\n")
    elif fmt == "ndjson":
        for row in rows:
            out.write(orjson.dumps(row).decode() + "\n")
            count += 1
    elif fmt == "csv":
        writer = csv.DictWriter(out, fieldnames=list(keys), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _cell(v, plain=False) for k, v in row.items()})
            count += 1
    else:
        count = _stream_table(rows, columns, fit)
    out.flush()
    return count


def _stream_table(
    rows: Iterable[Mapping[str, Any]], columns: Sequence[str], fit: str | None
) -> int:
    it = iter(rows)
    sample = [[_cell(row.get(c)) for c in columns] for row in itertools.islice(it, TABLE_SAMPLE)]
    if not sample:
        click.echo("(nothing)", err=True)
        return 0
    widths = [max(len(c), *(len(r[i]) for r in sample)) for i, c in enumerate(columns)]
    if fit is not None and fit in columns:
        at, total = columns.index(fit), terminal_width()
        # Others wider than a quarter of the terminal are cut first, so ``fit`` keeps room.
        widths = [w if i == at else min(w, max(len(columns[i]), total // 4))
                  for i, w in enumerate(widths)]  # fmt: skip
        room = total - sum(w + 2 for i, w in enumerate(widths) if i != at)
        widths[at] = max(len(fit), min(widths[at], room))
    line = "  ".join(f"{{:<{w}.{w}}}" for w in widths)
    out = sys.stdout
    out.write(line.format(*columns).rstrip() + "\n")
    for cells in sample:
        out.write(line.format(*_fitted(cells, widths)).rstrip() + "\n")
    count = len(sample)
    for row in it:
        cells = [_cell(row.get(c)) for c in columns]
        out.write(line.format(*_fitted(cells, widths)).rstrip() + "\n")
        count += 1
    return count


def _fitted(cells: list[str], widths: list[int]) -> list[str]:
    return [c if len(c) <= w else c[: w - 1] + "…" for c, w in zip(cells, widths, strict=True)]


def terminal_width() -> int:
    """The terminal's width in columns ($COLUMNS, else the terminal's, else 100)."""
    return shutil.get_terminal_size((100, 24)).columns


def _csv(rows: Sequence[Mapping[str, Any]]) -> None:
    if not rows:
        return
    writer = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(v, plain=False) for k, v in row.items()})


def _table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
    if not rows:
        click.echo("(nothing)", err=True)
        return
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    click.echo(line.format(*columns).rstrip())
    for row in cells:
        click.echo(line.format(*row).rstrip())


def _cell(value: Any, *, plain: bool = True) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return " ".join(value.split()) if plain else value
    if isinstance(value, bool | int | float):
        return str(value)
    return orjson.dumps(value).decode()


def query_text(query: Mapping[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(query.items()))


@contextmanager
def progress(label: str, unit: str = "studies") -> Iterator[Callable[[int | None, int], None]]:
    """A progress bar on stderr when it is a terminal (done/total, ``unit``/s, time left);
    otherwise a callback that does nothing."""
    if not sys.stderr.isatty():
        yield lambda total, done: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        Task,
        TaskProgressColumn,
        TextColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class Rate(ProgressColumn):
        def render(self, task: Task) -> Text:
            speed = task.finished_speed or task.speed
            return Text(f"{speed:,.0f} {unit}/s" if speed else f"… {unit}/s")

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        Rate(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=None)

        def advance(total: int | None, done: int) -> None:
            if total is not None:
                bar.update(task, total=total)
            bar.advance(task, done)

        yield advance
