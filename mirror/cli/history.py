"""``ctmirror backfill``, ``ctmirror timeline`` and ``ctmirror classes``."""

from __future__ import annotations

import asyncio

import click

from mirror import feed
from mirror.app import App
from mirror.cli import output
from mirror.cli.context import Context, format_option, pass_ctx
from mirror.errors import UsageError
from mirror.pipeline import BackfillRequest, BackfillSummary, get_watch, reclassify
from mirror.record import CATALOG, parse_nct_id
from mirror.render import class_label


@click.command()
@click.argument("nct_ids", nargs=-1)
@click.option("--watch", "watch_name", help="Backfill the studies of this watch.")
@click.option("--all-tracked", is_flag=True, help="Backfill every study the mirror tracks.")
@click.option(
    "--max-versions", type=click.IntRange(min=1), help="Only the newest N registry versions."
)
@pass_ctx
def backfill(
    c: Context,
    nct_ids: tuple[str, ...],
    watch_name: str | None,
    all_tracked: bool,
    max_versions: int | None,
) -> None:
    """Store the registry's whole record history of studies, version by version.

    Safe to interrupt and run again: what is stored is skipped.
    """
    request = BackfillRequest(
        nct_ids=[parse_nct_id(i) for i in nct_ids],
        watch=get_watch(c.app.db, watch_name) if watch_name else None,
        all_tracked=all_tracked,
        max_versions=max_versions,
    )
    summary = asyncio.run(_run(c.app, request))
    click.echo(summary.line())
    for nct_id, error in summary.failures[:20]:
        click.echo(f"  failed {nct_id}: {error}", err=True)
    if summary.failures:
        raise click.exceptions.Exit(1)


async def _run(app: App, request: BackfillRequest) -> BackfillSummary:
    async with app.source() as source:
        with output.progress("backfilling") as advance:
            return await app.backfiller(source).run(request, advance)


@click.command()
@click.argument("nct_id")
@format_option()
@pass_ctx
def timeline(c: Context, nct_id: str, fmt: str) -> None:
    """One line per version of a study: its dates and what kind of change it was."""
    entries = feed.timeline(c.reader.db, parse_nct_id(nct_id))
    if fmt == "table":
        rows = [
            e | {"classes": ", ".join(class_label(k) for k in e["classes"]) or "-"} for e in entries
        ]
        output.emit(rows, fmt, ["version", "source_date", "observed_at", "origin", "classes"])
    else:
        output.emit(entries, fmt, ["version", "source_date", "observed_at", "classes"])


@click.command()
@format_option()
@click.option(
    "--recompute",
    is_flag=True,
    help="Derive the classes of stored versions again (all studies, or the NCT ids given).",
)
@click.argument("nct_ids", nargs=-1)
@pass_ctx
def classes(c: Context, fmt: str, recompute: bool, nct_ids: tuple[str, ...]) -> None:
    """The change classes every study version is sorted into, and their parameters.

    With --recompute: classify stored versions again, e.g. after an upgrade that changed
    the classes' definitions, or for versions stored before classes existed.
    """
    if recompute:
        with output.progress("classifying") as advance:
            written = reclassify(c.app.db, [parse_nct_id(i) for i in nct_ids], advance)
        click.echo(f"classified again: {written} classes written")
        return
    if nct_ids:
        raise UsageError("NCT ids go with --recompute")
    rows = [
        {
            "name": info.name,
            "summary": info.summary,
            "params": ", ".join(info.params) if fmt in ("table", "csv") else dict(info.params),
        }
        for info in CATALOG
    ]
    output.emit(rows, fmt, ["name", "summary", "params"])
