"""How the CLI prints: tables for people, JSON / NDJSON / CSV for programs, progress on a tty."""

from __future__ import annotations

import csv
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
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
def progress(label: str) -> Iterator[Callable[[int | None, int], None]]:
    """A progress bar on stderr when it is a terminal (done/total, studies/s, time left);
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
            return Text(f"{speed:,.0f} studies/s" if speed else "… studies/s")

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
