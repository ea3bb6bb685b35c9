"""The ``ctmirror daemon`` command and the ``ctmirror webhooks …`` group (registered in cli.py).

The context object is cli.py's ``Context`` (``.settings``, ``.app``), passed with ``pass_obj``
so this module does not import cli.py back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from mirror.cli import output
from mirror.notify.deliveries import describe_delivery, list_deliveries, replay_delivery
from mirror.notify.dispatch import deliver_now, owner_name, ping
from mirror.notify.egress import EgressPolicy
from mirror.notify.sender import HttpSender, SendResult
from mirror.notify.subscriptions import (
    SubscriptionSpec,
    add_subscription,
    describe_subscription,
    get_subscription,
    list_subscriptions,
    remove_subscription,
    resume_subscription,
)
from mirror.record.events import ChangeKind
from mirror.store.schema import DeliveryStatus

if TYPE_CHECKING:
    from mirror.cli.main import Context

F = TypeVar("F", bound=Callable[..., Any])


def _format(default: str = "table") -> Callable[[F], F]:
    choices = ["table", "json", "ndjson", "csv"]
    return click.option("--format", "fmt", type=click.Choice(choices), default=default)


# -- daemon -------------------------------------------------------------------------------------


@click.command("daemon")
@click.option("--once", is_flag=True, help="Run every due watch once, deliver due webhooks, exit.")
@click.pass_obj
def daemon_command(c: Context, once: bool) -> None:
    """Sync watches on their schedules and deliver webhooks, until SIGTERM or Ctrl-C."""
    from mirror.daemon.process import run_daemon

    summary = run_daemon(c.app, once=once)
    if summary is None:
        return
    failed = sum(r.status.value != "ok" for r in summary.runs)
    note = "" if summary.scheduler else " (another daemon holds the scheduler lock: none queued)"
    click.echo(
        f"daemon --once: {summary.queued} watch runs queued{note}, {len(summary.runs)} run, "
        f"{failed} failed; {summary.attempts} webhook attempts"
    )
    if failed:
        raise click.exceptions.Exit(1)


# -- webhooks -----------------------------------------------------------------------------------


@click.group("webhooks")
def webhooks_group() -> None:
    """Signed webhook notifications of new study versions."""


@webhooks_group.command("add")
@click.argument("url")
@click.option("--secret", help="Signing secret whsec_… (default: a new random one).")
@click.option("--nct", "nct_ids", multiple=True, help="Only this study (repeatable).")
@click.option("--watch", "watches", multiple=True, help="Only studies of this watch (repeatable).")
@click.option("--field", "fields", multiple=True, help="Field glob, e.g. 'status.*' (repeatable).")
@click.option("--kind", "kinds", multiple=True, type=click.Choice([k.value for k in ChangeKind]))
@click.option("--include-initial", is_flag=True, help="Also first-sight versions of studies.")
@click.option(
    "--class", "classes", multiple=True, help="Change-class glob, e.g. 'outcomes.primary.*'."
)
@_format()
@click.pass_obj
def webhooks_add(
    c: Context, url: str, secret: str | None, nct_ids: tuple[str, ...], watches: tuple[str, ...],
    fields: tuple[str, ...], kinds: tuple[str, ...], include_initial: bool,
    classes: tuple[str, ...], fmt: str,
) -> None:  # fmt: skip
    """Subscribe URL to new study versions; prints the signing secret this one time."""
    spec = SubscriptionSpec(url, secret, nct_ids, watches, fields, kinds, include_initial, classes)
    hooks = c.settings.webhooks
    sub, shown = add_subscription(
        c.app.db, spec, EgressPolicy(hooks.allow_private, hooks.allow_loopback)
    )
    if fmt != "table":
        output.emit([describe_subscription(sub) | {"secret": shown}], fmt, [])
        return
    click.echo(f"added webhook {sub.id} -> {sub.url}")
    click.echo(f"secret: {shown}")
    click.echo("(shown only now: store it where the receiver can verify signatures)", err=True)


@webhooks_group.command("list")
@_format()
@click.pass_obj
def webhooks_list(c: Context, fmt: str) -> None:
    """Subscriptions (secrets are never shown; a hint tells them apart)."""
    rows = [describe_subscription(s) for s in list_subscriptions(c.app.db)]
    if fmt == "table":
        for row in rows:
            filters = [*row["nct_ids"], *(f"watch:{w}" for w in row["watches"]), *row["fields"]]
            filters += [f"kind:{k}" for k in row["kinds"]]
            filters += [f"class:{k}" for k in row["classes"]]
            filters += ["+initial"] if row["include_initial"] else []
            row["filters"] = " ".join(filters) or "everything"
    output.emit(rows, fmt, ["id", "state", "url", "filters", "secret_hint", "created_at"])


@webhooks_group.command("remove")
@click.argument("subscription_id", type=int)
@click.pass_obj
def webhooks_remove(c: Context, subscription_id: int) -> None:
    """Delete subscription ID and its deliveries."""
    remove_subscription(c.app.db, subscription_id)
    click.echo(f"removed webhook {subscription_id}")


@webhooks_group.command("resume")
@click.argument("subscription_id", type=int)
@click.pass_obj
def webhooks_resume(c: Context, subscription_id: int) -> None:
    """Deliver to a paused subscription again."""
    resume_subscription(c.app.db, subscription_id)
    click.echo(f"resumed webhook {subscription_id}")


@webhooks_group.command("test")
@click.argument("subscription_id", type=int)
@click.pass_obj
def webhooks_test(c: Context, subscription_id: int) -> None:
    """Send a signed webhook.test message to subscription ID and show the answer."""
    sub = get_subscription(c.app.db, subscription_id)

    async def go() -> tuple[str, SendResult]:
        sender = HttpSender(c.settings.webhooks)
        try:
            return await ping(sender, sub)
        finally:
            await sender.aclose()

    message_id, result = asyncio.run(go())
    click.echo(f"{message_id} -> {sub.url}: {result.describe()} ({result.seconds * 1000:.0f} ms)")
    if not result.ok:
        raise click.exceptions.Exit(1)


@webhooks_group.command("deliveries")
@click.option("--status", type=click.Choice([s.value for s in DeliveryStatus]))
@click.option("--subscription", "subscription_id", type=int, help="Only this subscription's.")
@click.option("--replay", "replay_id", type=int, help="Send delivery ID again (same webhook-id).")
@click.option("--limit", type=int, default=50, show_default=True)
@_format()
@click.pass_obj
def webhooks_deliveries(
    c: Context, status: str | None, subscription_id: int | None, replay_id: int | None,
    limit: int, fmt: str,
) -> None:  # fmt: skip
    """Recent deliveries, newest first; --replay ID queues one again and tries it now."""
    if replay_id is not None:
        _replay(c, replay_id)
        return
    found = list_deliveries(
        c.app.db,
        status=DeliveryStatus(status) if status else None,
        subscription_id=subscription_id,
        limit=limit,
    )
    rows = [describe_delivery(d) for d in found]
    columns = ["id", "subscription_id", "nct_id", "version", "type", "status", "attempts"]
    output.emit(rows, fmt, [*columns, "last_status_code", "last_error"])


def _replay(c: Context, delivery_id: int) -> None:
    delivery = replay_delivery(c.app.db, delivery_id)
    result = asyncio.run(deliver_now(c.app.db, c.settings, delivery_id, owner_name()))
    if result is None:  # a daemon claimed it first: it sends it
        click.echo(f"delivery {delivery_id} ({delivery.message_id}) queued again")
        return
    click.echo(f"delivery {delivery_id} ({delivery.message_id}) replayed: {result.describe()}")
    if not result.ok:
        click.echo("the daemon retries it on the usual schedule", err=True)
        raise click.exceptions.Exit(1)
