"""Telling others about new versions: webhook subscriptions, the fan-out of the outbox into
deliveries, the dispatcher that sends them, the signed sender and its egress guard.
"""

from mirror.notify.deliveries import describe_delivery, list_deliveries, replay_delivery
from mirror.notify.dispatch import Dispatcher, deliver_now, owner_name, ping
from mirror.notify.egress import EgressPolicy
from mirror.notify.fanout import Links, fan_out
from mirror.notify.sender import HttpSender, SendResult, WebhookSender
from mirror.notify.subscriptions import (
    SubscriptionSpec,
    add_subscription,
    describe_subscription,
    get_subscription,
    list_subscriptions,
    remove_subscription,
    resume_subscription,
)

__all__ = [
    "Dispatcher",
    "EgressPolicy",
    "HttpSender",
    "Links",
    "SendResult",
    "SubscriptionSpec",
    "WebhookSender",
    "add_subscription",
    "deliver_now",
    "describe_delivery",
    "describe_subscription",
    "fan_out",
    "get_subscription",
    "list_deliveries",
    "list_subscriptions",
    "owner_name",
    "ping",
    "remove_subscription",
    "replay_delivery",
    "resume_subscription",
]
