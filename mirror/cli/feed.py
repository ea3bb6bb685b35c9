"""Reading the mirror: ``changes``, ``history``, ``diff``, ``show`` and ``fields``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import click
import orjson

from mirror import feed
from mirror.cli import output
from mirror.cli.context import Context, format_option, pass_ctx, utc
from mirror.record import ChangeKind, field_mapping


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
@click.option("--limit", type=int, default=100, show_default=True)
@format_option()
@pass_ctx
def changes(
    c: Context, nct_ids: tuple[str, ...], fields: tuple[str, ...], kinds: tuple[str, ...],
    watch_name: str | None, classes: tuple[str, ...], since: datetime | None,
    until: datetime | None, after: int | None, initial: bool | None, limit: int, fmt: str,
) -> None:  # fmt: skip
    """The change feed: field-level change events in id order."""
    flt = feed.ChangeFilter(
        nct_ids=nct_ids, fields=fields, kinds=[ChangeKind(k) for k in kinds],
        since=utc(since), until=utc(until), after=after,
        initial=initial, watch=watch_name, classes=classes, limit=limit,
    )  # fmt: skip
    events = [e.as_dict() for e in feed.changes(c.reader.db, flt)]
    if fmt == "table":
        for e in events:
            e["change"] = _change_text(e)
    output.emit(events, fmt, ["id", "nct_id", "version", "field", "change", "observed_at"])


def _change_text(event: dict[str, Any]) -> str:
    from mirror.render import short_value  # only for a table: json/ndjson/csv load no render

    if event["kind"] == "changed":
        return f"{short_value(event['old'])} → {short_value(event['new'])}"
    detail = "" if event["new"] is None else f": {short_value(event['new'])}"
    return f"{event['kind']}{detail}"


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
