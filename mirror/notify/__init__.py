"""Telling others about new versions: webhook subscriptions and notification targets, the
fan-out of the outbox into their deliveries (and digest items), the delivery loop every channel
shares, the signed webhook sender, the Apprise notifier, their egress guard, rules, messages
and digests.
"""

from mirror.notify.deliveries import (
    describe_delivery,
    describe_notification,
    list_deliveries,
    list_notifications,
    replay_delivery,
    replay_notification,
)
from mirror.notify.digests import DigestSchedule, build_due_digests
from mirror.notify.dispatch import (
    DeliveryLoop,
    Dispatcher,
    NotificationDispatcher,
    WebhookChannel,
    deliver_now,
    owner_name,
    ping,
)
from mirror.notify.egress import EgressPolicy
from mirror.notify.fanout import Links, fan_out
from mirror.notify.messages import Message, VersionSummary, digest_message, version_message
from mirror.notify.notifier import SCHEMES, AppriseNotifier, NotificationChannel, check_target_url
from mirror.notify.rules import Rule, RuleError, parse_rule
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
from mirror.notify.targets import (
    TargetSpec,
    add_target,
    describe_target,
    get_target,
    list_targets,
    remove_target,
    resume_target,
    send_test,
)

__all__ = [
    "AppriseNotifier",
    "DeliveryLoop",
    "DigestSchedule",
    "Dispatcher",
    "EgressPolicy",
    "HttpSender",
    "Links",
    "Message",
    "NotificationChannel",
    "NotificationDispatcher",
    "Rule",
    "RuleError",
    "SCHEMES",
    "SendResult",
    "SubscriptionSpec",
    "TargetSpec",
    "VersionSummary",
    "WebhookChannel",
    "WebhookSender",
    "add_subscription",
    "add_target",
    "build_due_digests",
    "check_target_url",
    "deliver_now",
    "describe_delivery",
    "describe_notification",
    "describe_subscription",
    "describe_target",
    "digest_message",
    "fan_out",
    "get_subscription",
    "get_target",
    "list_deliveries",
    "list_notifications",
    "list_subscriptions",
    "list_targets",
    "owner_name",
    "parse_rule",
    "ping",
    "remove_subscription",
    "remove_target",
    "replay_delivery",
    "replay_notification",
    "resume_subscription",
    "resume_target",
    "send_test",
    "version_message",
]
