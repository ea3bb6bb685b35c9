"""``ctmirror db …``: schema migrations, table sizes, raw-JSON retention."""

from __future__ import annotations

from typing import Any

import click

from mirror.cli import output
from mirror.cli.context import Context, format_option, pass_ctx
from mirror.errors import MirrorError, UsageError


@click.group()
def db() -> None:
    """Schema migrations, table sizes, raw-JSON retention."""


@db.command("upgrade")
@pass_ctx
def db_upgrade(c: Context) -> None:
    """Apply every pending migration."""
    from mirror.store import Database

    database = Database(c.settings.database.url)
    before = database.current_revision()
    database.upgrade()
    click.echo(f"database at revision {database.current_revision()} (was {before or 'empty'})")
    database.dispose()


@db.command("check")
@pass_ctx
def db_check(c: Context) -> None:
    """Fail unless the database is at the newest revision and matches the models."""
    from mirror.store import Database

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
    from mirror.store import table_stats

    found = table_stats(c.reader.db)
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
    from mirror.store import prune_raw

    days = days or c.settings.database.raw_retention_days
    if days is None:
        raise UsageError("set database.raw_retention_days (or pass --days N) to prune raw JSON")
    dropped = prune_raw(c.app.db, days)
    click.echo(f"dropped the raw JSON of {dropped} superseded versions older than {days} days")
