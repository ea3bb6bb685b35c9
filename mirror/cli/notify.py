"""The ``ctmirror notify …`` group: notification targets for people (Apprise URLs), test
messages, deliveries and replays (docs/notifications.md)."""

from __future__ import annotations

import asyncio
from typing import Any

import click

from mirror.cli import output
from mirror.cli.context import Context, format_option, pass_ctx
from mirror.notify import (
    NotificationChannel,
    SendResult,
    TargetSpec,
    add_target,
    deliver_now,
    describe_notification,
    describe_target,
    get_target,
    list_notifications,
    list_targets,
    owner_name,
    remove_target,
    replay_notification,
    resume_target,
    send_test,
)
from mirror.store import DeliveryStatus, DigestPeriod


@click.group("notify")
def notify_group() -> None:
    """Messages for people (email, Slack, Teams, ntfy…) when studies change."""


@notify_group.command("add")
@click.argument("url")
@click.option("--name", help="A name for the target (default: <scheme>-<id>).")
@click.option("--nct", "nct_ids", multiple=True, help="Only this study (repeatable).")
@click.option("--watch", "watches", multiple=True, help="Only studies of this watch (repeatable).")
@click.option("--field", "fields", multiple=True, help="Field glob, e.g. 'status.*' (repeatable).")
@click.option("--class", "classes", multiple=True, help="Change-class glob, e.g. 'dates.*'.")
@click.option(
    "--rule", "rules", multiple=True,
    help="Only versions passing this rule, e.g. 'enrollment.* |percent| >= 20' (repeatable: any).",
)  # fmt: skip
@click.option(
    "--digest", type=click.Choice([p.value for p in DigestPeriod]), default="off",
    show_default=True, help="One message per version (off), or a daily or weekly digest.",
)  # fmt: skip
@click.option("--at", help="Digest time HH:MM (notifications.timezone); weekly: '[DAY] HH:MM'.")
@format_option()
@pass_ctx
def notify_add(
    c: Context, url: str, name: str | None, nct_ids: tuple[str, ...], watches: tuple[str, ...],
    fields: tuple[str, ...], classes: tuple[str, ...], rules: tuple[str, ...], digest: str,
    at: str | None, fmt: str,
) -> None:  # fmt: skip
    """Send messages to URL (an Apprise URL such as mailto://… or slack://…) when studies change."""
    spec = TargetSpec(url, name, nct_ids, watches, fields, classes, rules, digest, at)
    target = add_target(c.app.db, spec, c.settings.notifications)
    row = describe_target(target)
    if fmt != "table":
        output.emit([row], fmt, [])
        return
    click.echo(f"added notification target {target.id} ({target.name}) -> {row['url']}")
    click.echo(f"sends: {_when(row, c.settings.notifications.timezone)}")


def _when(row: dict[str, Any], zone: str) -> str:
    if row["digest"] == "off":
        return "a message per changed study version"
    return f"a {row['digest']} digest at {row['at']} ({zone}), next {row['next_digest_at']}"


@notify_group.command("list")
@format_option()
@pass_ctx
def notify_list(c: Context, fmt: str) -> None:
    """Targets, with the credentials in their URLs masked."""
    rows = [describe_target(t) for t in list_targets(c.app.db)]
    if fmt == "table":
        for row in rows:
            filters = [*row["nct_ids"], *(f"watch:{w}" for w in row["watches"]), *row["fields"]]
            filters += [f"class:{k}" for k in row["classes"]]
            filters += [f"rule:{r}" for r in row["rules"]]
            row["filters"] = " ".join(filters) or "everything"
            row["sends"] = (
                "each version" if row["digest"] == "off" else f"{row['digest']} {row['at']}"
            )
    output.emit(rows, fmt, ["id", "name", "state", "url", "filters", "sends"])


@notify_group.command("remove")
@click.argument("target")
@pass_ctx
def notify_remove(c: Context, target: str) -> None:
    """Delete TARGET (id or name) and its pending messages."""
    removed = remove_target(c.app.db, target)
    click.echo(f"removed notification target {removed.id} ({removed.name})")


@notify_group.command("resume")
@click.argument("target")
@pass_ctx
def notify_resume(c: Context, target: str) -> None:
    """Send to a paused TARGET (id or name) again."""
    resumed = resume_target(c.app.db, target)
    click.echo(f"resumed notification target {resumed.id} ({resumed.name})")


@notify_group.command("test")
@click.argument("target")
@pass_ctx
def notify_test(c: Context, target: str) -> None:
    """Send a test message to TARGET (id or name) now and show the outcome."""
    found = get_target(c.app.db, target)
    result = asyncio.run(send_test(c.app.notifier(), found))
    outcome = "sent" if result.ok else f"failed: {result.describe()}"
    click.echo(f"test message to {found.shown_url}: {outcome} ({result.seconds * 1000:.0f} ms)")
    if not result.ok:
        raise click.exceptions.Exit(1)


@notify_group.command("deliveries")
@click.option("--status", type=click.Choice([s.value for s in DeliveryStatus]))
@click.option("--target", "target", help="Only this target's (id or name).")
@click.option("--replay", "replay_id", type=int, help="Send delivery ID again (same message).")
@click.option("--limit", type=int, default=50, show_default=True)
@format_option()
@pass_ctx
def notify_deliveries(
    c: Context, status: str | None, target: str | None, replay_id: int | None, limit: int,
    fmt: str,
) -> None:  # fmt: skip
    """Recent messages, newest first, with why the last attempt failed; --replay ID queues one
    again and tries it now."""
    if replay_id is not None:
        _replay(c, replay_id)
        return
    found = list_notifications(
        c.app.db,
        status=DeliveryStatus(status) if status else None,
        target_id=get_target(c.app.db, target).id if target else None,
        limit=limit,
    )
    rows = [describe_notification(d) for d in found]
    columns = ["id", "target_id", "kind", "title", "status", "attempts", "last_error"]
    output.emit(rows, fmt, columns)


def _replay(c: Context, delivery_id: int) -> None:
    delivery = replay_notification(c.app.db, delivery_id)
    channel = NotificationChannel(c.app.notifier())
    settings = c.settings.notifications
    result: SendResult | None = asyncio.run(
        deliver_now(c.app.db, channel, settings, delivery_id, owner_name())
    )
    if result is None:  # a daemon claimed it first: it sends it
        click.echo(f"notification {delivery_id} ({delivery.message_id}) queued again")
        return
    outcome = "sent" if result.ok else f"failed: {result.describe()}"
    click.echo(f"notification {delivery_id} ({delivery.message_id}) replayed: {outcome}")
    if not result.ok:
        click.echo("the daemon retries it on the usual schedule", err=True)
        raise click.exceptions.Exit(1)
