"""``ctmirror sync``: read studies from the registry and record what changed."""

from __future__ import annotations

import asyncio
from datetime import datetime

import click

from mirror.app import App
from mirror.cli import output
from mirror.cli.context import Context, pass_ctx
from mirror.errors import UsageError
from mirror.pipeline import RunSummary, SyncRequest, get_watch
from mirror.record import parse_nct_id
from mirror.source import parse_query


@click.command()
@click.argument("nct_ids", nargs=-1)
@click.option(
    "--query",
    "queries",
    multiple=True,
    metavar="K=V|TERMS",
    help="A saved-search parameter (query.cond=asthma); bare text means query.term.",
)
@click.option("--watch", "watch_name", help="Sync this watch.")
@click.option("--all", "everything", is_flag=True, help="Sync the whole registry.")
@click.option("--since", type=click.DateTime(["%Y-%m-%d"]), help="Only studies updated since.")
@click.option("--full", is_flag=True, help="A watch: re-read everything, not only recent updates.")
@pass_ctx
def sync(
    c: Context, nct_ids: tuple[str, ...], queries: tuple[str, ...], watch_name: str | None,
    everything: bool, since: datetime | None, full: bool,
) -> None:  # fmt: skip
    """Read studies from ClinicalTrials.gov and record what changed."""
    chosen = sum([bool(nct_ids), bool(queries), watch_name is not None, everything])
    if chosen != 1:
        raise UsageError("sync takes exactly one of: NCT ids, --query, --watch NAME, --all")
    request = SyncRequest(
        nct_ids=[parse_nct_id(i) for i in nct_ids],
        query=parse_query(queries) if queries else None,
        watch=get_watch(c.app.db, watch_name) if watch_name else None,
        everything=everything,
        since=since.date() if since else None,
        full=full,
    )
    summary = asyncio.run(_run_sync(c.app, request))
    click.echo(summary.line())
    _report_failures(summary)


def _report_failures(summary: RunSummary) -> None:
    """Name what failed; any failure makes the exit code 1 (cron must notice)."""
    if not summary.failures:
        return
    errors = {error for _, error in summary.failures}
    if len(errors) == 1 and not summary.counts["fetched"]:
        click.echo(f"error: no study could be read: {errors.pop()}", err=True)
    else:
        for nct_id, error in summary.failures[:20]:
            click.echo(f"  failed {nct_id}: {error}", err=True)
        if len(summary.failures) > 20:
            click.echo(f"  … and {len(summary.failures) - 20} more", err=True)
    raise click.exceptions.Exit(1)


async def _run_sync(app: App, request: SyncRequest) -> RunSummary:
    async with app.source() as source:
        with output.progress("syncing") as advance:
            return await app.syncer(source).run(request, advance)
