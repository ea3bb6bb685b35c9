"""``ctmirror audit``: is the mirror complete? Each watch against what the registry lists."""

from __future__ import annotations

import asyncio

import click
import orjson

from mirror import export
from mirror.cli.context import Context, format_option, pass_ctx
from mirror.errors import UsageError


@click.command("audit")
@click.option("--watch", "watch_name", help="Audit this watch.")
@click.option("--all", "everything", is_flag=True, help="Audit every watch.")
@format_option(["table", "json"])
@pass_ctx
def audit_command(c: Context, watch_name: str | None, everything: bool, fmt: str) -> None:
    """Compare what the registry lists for a watch with what the mirror holds: missing
    studies, extra ones (no longer listed), stale ones (not seen for longer than the watch's
    schedule allows). Exits 1 when a study is missing or the registry could not be asked."""
    if bool(watch_name) == everything:
        raise UsageError("name one watch (--watch NAME) or audit them all (--all)")
    app = c.reader
    watches = export.watches_to_audit(app.db, watch_name)

    async def run() -> list[export.AuditResult]:
        async with app.source() as source:
            return [await export.audit_watch(app.db, source, w, app.settings) for w in watches]

    results = asyncio.run(run())
    for watch, result in zip(watches, results, strict=True):
        export.record_audit(app.db, watch, result)
    status = export.summary_status(results)
    if fmt == "json":
        body = {"status": status, "watches": [r.as_dict() for r in results]}
        click.echo(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode())
    else:
        for result in results:
            click.echo(result.line())
            for label, ids in (("missing", result.missing), ("extra", result.extra),
                               ("stale", result.stale)):  # fmt: skip
                if ids:
                    more = f" (+{len(ids) - 10:,} more)" if len(ids) > 10 else ""
                    click.echo(f"  {label}: {', '.join(ids[:10])}{more}")
        click.echo(f"{status if status != 'incomplete' else 'partial'}: audited "
                   f"{len(results)} watch{'es' if len(results) != 1 else ''}")  # fmt: skip
    if status != "ok":
        raise SystemExit(1)
