"""Reading the mirror: ``changes``, ``history``, ``diff``, ``show`` and ``fields``."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime
from typing import Any

import click
import orjson

from mirror import feed
from mirror.cli import output
from mirror.cli.context import Context, format_option, pass_ctx, utc
from mirror.record import ChangeKind, field_mapping
from mirror.store import ChangeEvent

INLINE_VALUE_MAX = 80


@click.command()
@click.option("--nct", "nct_ids", multiple=True, help="Only this study (repeatable).")
@click.option("--field", "fields", multiple=True, help="Field glob, e.g. 'status.*' (repeatable).")
@click.option("--kind", "kinds", multiple=True, type=click.Choice([k.value for k in ChangeKind]))
@click.option("--watch", "watch_name", help="Only studies of this watch.")
@click.option(
    "--class",
    "classes",
    multiple=True,
    help="Only versions with a change class matching this glob, e.g. 'outcomes.primary.*'.",
)
@click.option("--since", type=click.DateTime(), help="Observed at or after (UTC).")
@click.option("--until", type=click.DateTime(), help="Observed before (UTC).")
@click.option("--after", type=int, help="Only events with id greater than this cursor.")
@click.option(
    "--initial/--no-initial",
    default=None,
    help="Only the events of first sight / drop them (default: both).",
)
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=100,
    show_default=True,
    help="At most this many events; 0: every matching event.",
)
@click.option("--all", "everything", is_flag=True, help="Every matching event (--limit 0).")
@format_option()
@pass_ctx
def changes(
    c: Context, nct_ids: tuple[str, ...], fields: tuple[str, ...], kinds: tuple[str, ...],
    watch_name: str | None, classes: tuple[str, ...], since: datetime | None,
    until: datetime | None, after: int | None, initial: bool | None, limit: int,
    everything: bool, fmt: str,
) -> None:  # fmt: skip
    """The change feed: field-level change events in id order, streamed (any number of them,
    in constant memory). When --limit cuts the feed short, stderr says how to go on."""
    flt = feed.ChangeFilter(
        nct_ids=nct_ids, fields=fields, kinds=[ChangeKind(k) for k in kinds],
        since=utc(since), until=utc(until), after=after,
        initial=initial, watch=watch_name, classes=classes,
    )  # fmt: skip
    wanted = None if everything or limit == 0 else limit
    db = c.reader.db
    if wanted is not None and wanted < feed.MAX_LIMIT:  # one page: the feed's planner
        page = feed.change_dicts(db, replace(flt, limit=wanted + 1))
        _print(iter(page[:wanted]), fmt)
        more = len(page) > wanted
        last_id = page[wanted - 1]["id"] if more else None
    else:  # any number: streamed
        rows = feed.stream_changes(db, flt)
        try:
            last = _print((feed.event_dict(r) for r in itertools.islice(rows, wanted)), fmt)
            more = wanted is not None and next(rows, None) is not None
            last_id = last.id
        finally:
            rows.close()
    if more:
        click.echo(
            f"note: {wanted:,} events shown, more follow: continue with --after {last_id} "
            "(or --limit 0 for all)",
            err=True,
        )


def _print(events: Iterator[dict[str, Any]], fmt: str) -> _Last:
    """Print ``events`` as they come; the last one's id."""
    if fmt == "table":
        width = max(30, output.terminal_width() - TABLE_OTHERS)
        events = (e | {"change": _change_text(e, width)} for e in events)
    last = _Last()
    output.stream(last.track(events), fmt, TABLE_COLUMNS, EVENT_KEYS, fit="change")
    return last


TABLE_COLUMNS = ["id", "nct_id", "version", "field", "change", "observed_at"]
TABLE_OTHERS = 72  # what the other columns of a table take on a 100-column terminal
EVENT_KEYS = [
    "id", "nct_id", "version", "field", "kind", "old", "new", "observed_at", "source_date",
    "initial",
]  # fmt: skip


class _Last:
    """Remembers the id of the last event that went by (the cursor to continue from)."""

    id: int | None = None

    def track(self, events: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for event in events:
            self.id = event["id"]
            yield event


def _change_text(event: dict[str, Any], width: int = INLINE_VALUE_MAX) -> str:
    """One event in words within ``width``: two texts cut around their first difference, lists
    and objects by what changed in them (the pages' summaries)."""
    from mirror.render import change_text  # only for a table: json/ndjson/csv load no render

    old, new = event["old"], event["new"]
    if event["kind"] == "changed" and isinstance(old, str) and isinstance(new, str):
        return " → ".join(_around(" ".join(old.split()), " ".join(new.split()), (width - 3) // 2))
    shown = ChangeEvent(field=event["field"], kind=ChangeKind(event["kind"]), old=old, new=new)
    each = (width - 12) // 2 if event["kind"] == "changed" else width - len(event["kind"]) - 2
    text = change_text(shown, limit=max(10, each)).removeprefix("changed: ")
    return text if len(text) <= width else text[: width - 1] + "…"


def _around(old: str, new: str, limit: int) -> tuple[str, str]:
    """Both texts within ``limit`` characters, cut so that their first difference shows."""
    if len(old) <= limit and len(new) <= limit:
        return old, new
    differs = len(os.path.commonprefix([old, new]))
    start = max(0, differs - max(4, limit // 3))
    if start:
        old, new = "…" + old[start:], "…" + new[start:]
    return tuple(t if len(t) <= limit else t[: limit - 1] + "…" for t in (old, new))  # type: ignore[return-value]


@click.command()
@click.argument("nct_id")
@format_option()
@pass_ctx
def history(c: Context, nct_id: str, fmt: str) -> None:
    """Every stored version of a study."""
    study, versions = feed.history(c.reader.db, nct_id)
    rows = [
        {
            "nct_id": study.nct_id,
            "version": v.version,
            "observed_at": v.observed_at.isoformat(),
            "source_date": v.source_date,
            "origin": v.origin,
            "events": v.events,
            "fields": v.fields if fmt != "table" else _field_summary(v.fields),
        }
        for v in versions
    ]
    output.emit(rows, fmt, ["version", "observed_at", "source_date", "origin", "events", "fields"])


def _field_summary(fields: list[str]) -> str:
    shown = ", ".join(fields[:4])
    return shown + (f" (+{len(fields) - 4} more)" if len(fields) > 4 else "")


@click.command()
@click.argument("nct_id")
@click.argument("old", type=int)
@click.argument("new", type=int)
@format_option()
@pass_ctx
def diff(c: Context, nct_id: str, old: int, new: int, fmt: str) -> None:
    """Field changes between versions OLD and NEW of a study."""
    found = feed.diff_versions(c.reader.db, nct_id, old, new)
    rows = [
        {"field": ch.field, "kind": ch.kind.value, "old": ch.old, "new": ch.new} for ch in found
    ]
    if fmt == "table":
        rows = [r | {"change": _change_text(r)} for r in rows]
    output.emit(rows, fmt, ["field", "change"])


@click.command()
@click.argument("nct_id")
@click.option("--format", "fmt", type=click.Choice(["md", "json"]), default="md", show_default=True)
@click.option("--version", "version", type=int, help="Render this past version.")
@pass_ctx
def show(c: Context, nct_id: str, fmt: str, version: int | None) -> None:
    """A study's page (Markdown, as the seed page) or its canonical record (JSON)."""
    if fmt == "json":
        detail = feed.study_detail(c.reader.db, nct_id, version)
        click.echo(orjson.dumps(detail, option=orjson.OPT_INDENT_2))
        return
    from mirror.render import render_markdown

    page = feed.page_input(c.reader.db, nct_id, version, c.settings.pages)
    click.echo(render_markdown(page, c.settings.pages), nl=False)


@click.command()
@format_option()
def fields(fmt: str) -> None:
    """Every canonical field path and where in API v2 it comes from."""
    rows = [{"path": r.path, "kind": r.kind, "source": r.source} for r in field_mapping()]
    output.emit(rows, fmt, ["path", "kind", "source"])
