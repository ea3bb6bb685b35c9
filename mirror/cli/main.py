"""The ``ctmirror`` command line.

Exit codes: 0 success, 1 a run-time failure (source unreachable, study not found),
2 a usage error (bad NCT id, bad option, bad setting). Output goes to stdout,
logs and progress to stderr.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import click
import orjson

from mirror.app import App, build_app
from mirror.cli import output
from mirror.cli.history import backfill, classes, timeline
from mirror.cli.imports import import_command
from mirror.cli.webhooks import daemon_command, webhooks_group
from mirror.config import Settings, load_settings
from mirror.errors import MirrorError, UsageError
from mirror.feed import reads as feed
from mirror.logging import configure_logging
from mirror.pipeline.sync import RunSummary, SyncRequest
from mirror.pipeline.watches import add_watch, describe, get_watch, list_watches, remove_watch
from mirror.record.events import ChangeKind
from mirror.record.fields import field_mapping
from mirror.record.nct import parse_nct_id
from mirror.render.describe import short_value
from mirror.render.pages import render_markdown
from mirror.source.search import parse_query

F = TypeVar("F", bound=Callable[..., Any])
FORMATS = ["table", "json", "ndjson", "csv"]


class MirrorGroup(click.Group):
    """Turns ctmirror's own errors into a message and an exit code instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MirrorError as exc:
            click.echo(f"error: {exc.message}", err=True)
            ctx.exit(exc.exit_code)


class Context:
    """What every command may need, built on first use."""

    def __init__(self, config_path: str | None) -> None:
        self.config_path = config_path
        self._settings: Settings | None = None
        self._app: App | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.config_path)
            configure_logging(self._settings.log)
        return self._settings

    @property
    def app(self) -> App:
        if self._app is None:
            self._app = build_app(self.settings)
        return self._app

    def close(self) -> None:
        if self._app is not None:
            self._app.close()


pass_ctx = click.make_pass_decorator(Context)


@click.group(cls=MirrorGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    help="Settings file (default: $CTMIRROR_CONFIG, else ./config/ctmirror.toml).",
)
@click.version_option(package_name="ctmirror")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None) -> None:
    """ctmirror: a change-tracking mirror of ClinicalTrials.gov."""
    ctx.obj = Context(config_path)
    ctx.call_on_close(ctx.obj.close)


def format_option(choices: Sequence[str] = FORMATS, default: str = "table") -> Callable[[F], F]:
    return click.option(
        "--format", "fmt", type=click.Choice(list(choices)), default=default, show_default=True
    )


# -- sync --------------------------------------------------------------------------------------


@cli.command()
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


# -- watches -----------------------------------------------------------------------------------


@cli.group()
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
    rows = [describe(w) | {"studies": n} for w, n in list_watches(c.app.db)]
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


# -- reading -----------------------------------------------------------------------------------


@cli.command()
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
        since=_utc(since), until=_utc(until), after=after,
        initial=initial, watch=watch_name, classes=classes, limit=limit,
    )  # fmt: skip
    events = [e.as_dict() for e in feed.changes(c.app.db, flt)]
    if fmt == "table":
        for e in events:
            e["change"] = _change_text(e)
    output.emit(events, fmt, ["id", "nct_id", "version", "field", "change", "observed_at"])


def _change_text(event: dict[str, Any]) -> str:
    if event["kind"] == "changed":
        return f"{short_value(event['old'])} → {short_value(event['new'])}"
    detail = "" if event["new"] is None else f": {short_value(event['new'])}"
    return f"{event['kind']}{detail}"


@cli.command()
@click.argument("nct_id")
@format_option()
@pass_ctx
def history(c: Context, nct_id: str, fmt: str) -> None:
    """Every stored version of a study."""
    study, versions = feed.history(c.app.db, nct_id)
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


@cli.command()
@click.argument("nct_id")
@click.argument("old", type=int)
@click.argument("new", type=int)
@format_option()
@pass_ctx
def diff(c: Context, nct_id: str, old: int, new: int, fmt: str) -> None:
    """Field changes between versions OLD and NEW of a study."""
    found = feed.diff_versions(c.app.db, nct_id, old, new)
    rows = [
        {"field": ch.field, "kind": ch.kind.value, "old": ch.old, "new": ch.new} for ch in found
    ]
    if fmt == "table":
        rows = [r | {"change": _change_text(r)} for r in rows]
    output.emit(rows, fmt, ["field", "change"])


@cli.command()
@click.argument("nct_id")
@click.option("--format", "fmt", type=click.Choice(["md", "json"]), default="md", show_default=True)
@click.option("--version", "version", type=int, help="Render this past version.")
@pass_ctx
def show(c: Context, nct_id: str, fmt: str, version: int | None) -> None:
    """A study's page (Markdown, as the seed page) or its canonical record (JSON)."""
    if fmt == "json":
        detail = feed.study_detail(c.app.db, nct_id, version)
        click.echo(orjson.dumps(detail, option=orjson.OPT_INDENT_2))
        return
    page = feed.page_input(c.app.db, nct_id, version, c.settings.pages)
    click.echo(render_markdown(page, c.settings.pages), nl=False)


@cli.command()
@format_option()
def fields(fmt: str) -> None:
    """Every canonical field path and where in API v2 it comes from."""
    rows = [{"path": r.path, "kind": r.kind, "source": r.source} for r in field_mapping()]
    output.emit(rows, fmt, ["path", "kind", "source"])


# -- serving -----------------------------------------------------------------------------------


@cli.command()
@click.option("--host", help="Interface to listen on (default: the api.host setting).")
@click.option("--port", type=click.IntRange(0, 65535), help="Port (default: api.port).")
@pass_ctx
def serve(c: Context, host: str | None, port: int | None) -> None:
    """Serve the HTTP API, the change feed and the study pages (OpenAPI at /docs)."""
    import gc
    import signal

    import uvicorn

    from mirror.serve.app import create_app

    api = create_app(c.app)
    # What is loaded now lives as long as the process: keep it out of every later full
    # garbage collection (those paused requests by tens of milliseconds).
    gc.freeze()
    host = host or c.settings.api.host
    port = c.settings.api.port if port is None else port
    click.echo(f"serving on http://{host}:{port} (docs at /docs); Ctrl-C stops", err=True)
    # uvicorn shuts down gracefully on SIGINT/SIGTERM, then re-raises the signal to the
    # handlers it found: these make that a normal end (exit 0), not a kill or "Aborted!".
    stops = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in stops}
    try:
        # log_config=None: uvicorn keeps to the logging configured by configure_logging.
        uvicorn.run(api, host=host, port=port, log_config=None, access_log=False)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    click.echo("stopped", err=True)


# -- database ----------------------------------------------------------------------------------


@cli.group()
def db() -> None:
    """Schema migrations, table sizes, raw-JSON retention."""


@db.command("upgrade")
@pass_ctx
def db_upgrade(c: Context) -> None:
    """Apply every pending migration."""
    from mirror.store.database import Database

    database = Database(c.settings.database.url)
    before = database.current_revision()
    database.upgrade()
    click.echo(f"database at revision {database.current_revision()} (was {before or 'empty'})")
    database.dispose()


@db.command("check")
@pass_ctx
def db_check(c: Context) -> None:
    """Fail unless the database is at the newest revision and matches the models."""
    from mirror.store.database import Database

    database = Database(c.settings.database.url)
    current, head = database.current_revision(), database.head_revision()
    if current != head:
        raise MirrorError(
            f"database at revision {current or 'none'}, code expects {head}: "
            "run `ctmirror db upgrade`"
        )
    drift = database.schema_drift()
    database.dispose()
    if drift:
        for item in drift:
            click.echo(f"  drift: {item}", err=True)
        raise MirrorError(f"database schema differs from the models in {len(drift)} place(s)")
    click.echo(f"database at revision {head}; schema matches the models")


@db.command("stats")
@format_option()
@pass_ctx
def db_stats(c: Context, fmt: str) -> None:
    """Rows and bytes per table (bytes include indexes), largest first."""
    from mirror.store.retention import table_stats

    found = table_stats(c.app.db)
    rows: list[dict[str, Any]] = [
        {"table": t.name, "rows": t.rows, "bytes": t.bytes, "size": _size(t.bytes)} for t in found
    ]
    if fmt == "table":
        total = sum(t.bytes or 0 for t in found)
        rows.append({"table": "(total)", "rows": sum(t.rows for t in found), "size": _size(total)})
    output.emit(rows, fmt, ["table", "rows", "size"])


def _size(value: int | None) -> str:
    if value is None:
        return "?"
    if value < 1024:
        return f"{value} B"
    size = value / 1024
    for unit in ("KB", "MB"):
        if size < 1024:
            return f"{size:,.1f} {unit}"
        size /= 1024
    return f"{size:,.1f} GB"


@db.command("prune")
@click.option(
    "--days",
    type=click.IntRange(min=1),
    help="Override database.raw_retention_days for this run.",
)
@pass_ctx
def db_prune(c: Context, days: int | None) -> None:
    """Drop the raw JSON of superseded versions older than database.raw_retention_days."""
    from mirror.store.retention import prune_raw

    days = days or c.settings.database.raw_retention_days
    if days is None:
        raise UsageError("set database.raw_retention_days (or pass --days N) to prune raw JSON")
    dropped = prune_raw(c.app.db, days)
    click.echo(f"dropped the raw JSON of {dropped} superseded versions older than {days} days")


cli.add_command(daemon_command)
cli.add_command(webhooks_group)
for command in (backfill, timeline, classes, import_command):
    cli.add_command(command)


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def main(argv: Sequence[str] | None = None) -> None:
    cli.main(args=list(argv) if argv is not None else None, prog_name="ctmirror")


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
