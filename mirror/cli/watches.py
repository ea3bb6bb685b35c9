"""``ctmirror watch add|list|remove``: what the mirror follows."""

from __future__ import annotations

import click

from mirror.cli import output
from mirror.cli.context import Context, format_option, pass_ctx
from mirror.pipeline import add_watch, describe, list_watches, remove_watch
from mirror.source import parse_query


@click.group()
def watch() -> None:
    """Manage what is mirrored: lists of ids, saved searches, the whole registry."""


@watch.command("add")
@click.argument("name")
@click.argument("nct_ids", nargs=-1)
@click.option("--query", "queries", multiple=True, metavar="K=V|TERMS")
@click.option("--all", "everything", is_flag=True, help="Watch the whole registry.")
@click.option("--schedule", help="'every 12h' or a crontab line; default: daily after the refresh.")
@pass_ctx
def watch_add(
    c: Context, name: str, nct_ids: tuple[str, ...], queries: tuple[str, ...],
    everything: bool, schedule: str | None,
) -> None:  # fmt: skip
    """Add watch NAME of NCT ids, of a saved search (--query), or of everything (--all)."""
    query = parse_query(queries) if queries else None
    created = add_watch(
        c.app.db, name, nct_ids=nct_ids, query=query, everything=everything, schedule=schedule
    )
    click.echo(f"added watch {created.name} ({created.kind.value})")


@watch.command("list")
@format_option()
@pass_ctx
def watch_list(c: Context, fmt: str) -> None:
    """List watches."""
    rows = [describe(w) | {"studies": n} for w, n in list_watches(c.reader.db)]
    for row in rows:
        row["what"] = ",".join(row["nct_ids"]) or output.query_text(row["query"]) or "everything"
    output.emit(rows, fmt, ["name", "kind", "what", "schedule", "studies", "last_run_at"])


@watch.command("remove")
@click.argument("name")
@pass_ctx
def watch_remove(c: Context, name: str) -> None:
    """Remove watch NAME (mirrored studies and their history stay)."""
    remove_watch(c.app.db, name)
    click.echo(f"removed watch {name}")
