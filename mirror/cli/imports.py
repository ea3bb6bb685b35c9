"""``ctmirror import``: seed or refresh the mirror from an archive."""

from __future__ import annotations

import sys
from datetime import UTC, datetime

import click

from mirror.cli import output
from mirror.cli.context import Context, pass_ctx
from mirror.pipeline import ImportSummary, auto_workers, run_workers
from mirror.source import open_archive


def _instant(ctx: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
    """An ISO 8601 date or time; without a zone it is UTC."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not an ISO 8601 time (e.g. 2026-06-01T07:00:00Z)"
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


@click.command("import")
@click.argument("path")
@click.option(
    "--observed-at",
    metavar="DATETIME",
    callback=_instant,
    help="When the archive's records were observed (ISO 8601, UTC unless given; default: now).",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    help="Worker processes, each reading, normalizing and writing batches of its own (default: "
    "one per CPU, up to 4, for an archive of more than a few batches). Other hosts may join "
    "with a copy of the same archive (PostgreSQL).",
)
@pass_ctx
def import_command(
    c: Context, path: str, observed_at: datetime | None, workers: int | None
) -> None:
    """Import study records from an archive, as a sync would record them.

    PATH is the registry's bulk download (ctg-studies.json.zip), a directory of NCT*.json
    files, or NDJSON (one study per line; '-' reads standard input). Safe to interrupt and
    run again: an unfinished import resumes, and what is stored already is not written twice.
    """
    stdin = sys.stdin.buffer if path == "-" and sys.stdin is not None else None
    source = open_archive(path, stdin=stdin)
    if workers is None:
        workers = auto_workers(source, c.settings.sync.batch_size)
    with output.progress("importing") as advance:
        if workers > 1:
            summary = run_workers(c.app.db, c.settings, path, workers, observed_at, advance)
        else:
            summary = c.app.importer().run(source, observed_at, advance)
    click.echo(summary.line())
    _report(summary)


def _report(summary: ImportSummary) -> None:
    """Name what was skipped; anything skipped makes the exit code 1."""
    failures = summary.tally.failures
    for label, error in failures[:20]:
        click.echo(f"  failed {label}: {error}", err=True)
    if summary.tally.counts["failed"] > 20:
        click.echo(f"  … and {summary.tally.counts['failed'] - 20} more", err=True)
    if summary.error:
        click.echo(f"error: {summary.error}", err=True)
    if failures or summary.tally.counts["failed"] or summary.error:
        raise click.exceptions.Exit(1)
