"""The ``ctmirror webhooks …`` group: subscriptions, test pings, deliveries and replays."""

from __future__ import annotations

import asyncio

import click

from mirror.cli import output
from mirror.cli.context import Context, format_option, pass_ctx
from mirror.notify import (
    SendResult,
    SubscriptionSpec,
    WebhookChannel,
    add_subscription,
    deliver_now,
    describe_delivery,
    describe_subscription,
    get_subscription,
    list_deliveries,
    list_subscriptions,
    owner_name,
    ping,
    remove_subscription,
    replay_delivery,
    resume_subscription,
)
from mirror.record import ChangeKind
from mirror.store import DeliveryStatus


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
@format_option()
@pass_ctx
def webhooks_add(
    c: Context, url: str, secret: str | None, nct_ids: tuple[str, ...], watches: tuple[str, ...],
    fields: tuple[str, ...], kinds: tuple[str, ...], include_initial: bool,
    classes: tuple[str, ...], fmt: str,
) -> None:  # fmt: skip
    """Subscribe URL to new study versions; prints the signing secret this one time."""
    spec = SubscriptionSpec(url, secret, nct_ids, watches, fields, kinds, include_initial, classes)
    sub, shown = add_subscription(c.app.db, spec, c.app.egress_policy())
    if fmt != "table":
        output.emit([describe_subscription(sub) | {"secret": shown}], fmt, [])
        return
    click.echo(f"added webhook {sub.id} -> {sub.url}")
    click.echo(f"secret: {shown}")
    click.echo("(shown only now: store it where the receiver can verify signatures)", err=True)


@webhooks_group.command("list")
@format_option()
@pass_ctx
def webhooks_list(c: Context, fmt: str) -> None:
    """Subscriptions (secrets are never shown; a hint tells them apart)."""
    rows = [describe_subscription(s) for s in list_subscriptions(c.reader.db)]
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
@pass_ctx
def webhooks_remove(c: Context, subscription_id: int) -> None:
    """Delete subscription ID and its deliveries."""
    remove_subscription(c.app.db, subscription_id)
    click.echo(f"removed webhook {subscription_id}")


@webhooks_group.command("resume")
@click.argument("subscription_id", type=int)
@pass_ctx
def webhooks_resume(c: Context, subscription_id: int) -> None:
    """Deliver to a paused subscription again."""
    resume_subscription(c.app.db, subscription_id)
    click.echo(f"resumed webhook {subscription_id}")


@webhooks_group.command("test")
@click.argument("subscription_id", type=int)
@pass_ctx
def webhooks_test(c: Context, subscription_id: int) -> None:
    """Send a signed webhook.test message to subscription ID and show the answer."""
    sub = get_subscription(c.reader.db, subscription_id)

    async def go() -> tuple[str, SendResult]:
        async with c.app.sender() as sender:
            return await ping(sender, sub)

    message_id, result = asyncio.run(go())
    click.echo(f"{message_id} -> {sub.url}: {result.describe()} ({result.seconds * 1000:.0f} ms)")
    if not result.ok:
        raise click.exceptions.Exit(1)


@webhooks_group.command("deliveries")
@click.option("--status", type=click.Choice([s.value for s in DeliveryStatus]))
@click.option("--subscription", "subscription_id", type=int, help="Only this subscription's.")
@click.option("--replay", "replay_id", type=int, help="Send delivery ID again (same webhook-id).")
@click.option("--limit", type=int, default=50, show_default=True)
@format_option()
@pass_ctx
def webhooks_deliveries(
    c: Context, status: str | None, subscription_id: int | None, replay_id: int | None,
    limit: int, fmt: str,
) -> None:  # fmt: skip
    """Recent deliveries, newest first; --replay ID queues one again and tries it now."""
    if replay_id is not None:
        _replay(c, replay_id)
        return
    found = list_deliveries(
        c.reader.db,
        status=DeliveryStatus(status) if status else None,
        subscription_id=subscription_id,
        limit=limit,
    )
    rows = [describe_delivery(d) for d in found]
    columns = ["id", "subscription_id", "nct_id", "version", "type", "status", "attempts"]
    output.emit(rows, fmt, [*columns, "last_status_code", "last_error"])


def _replay(c: Context, delivery_id: int) -> None:
    delivery = replay_delivery(c.app.db, delivery_id)

    async def go() -> SendResult | None:
        async with c.app.sender() as sender:
            channel = WebhookChannel(sender)
            return await deliver_now(c.app.db, channel, c.settings.webhooks, delivery_id,
                                     owner_name())  # fmt: skip

    result = asyncio.run(go())
    if result is None:  # a daemon claimed it first: it sends it
        click.echo(f"delivery {delivery_id} ({delivery.message_id}) queued again")
        return
    click.echo(f"delivery {delivery_id} ({delivery.message_id}) replayed: {result.describe()}")
    if not result.ok:
        click.echo("the daemon retries it on the usual schedule", err=True)
        raise click.exceptions.Exit(1)
