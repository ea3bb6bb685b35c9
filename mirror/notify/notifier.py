"""Sending notifications to people through Apprise: which target URLs are accepted, how they are
shown without their credentials, and the sender that keeps every connection inside the egress
policy (:mod:`mirror.notify.egress`).

**Which URLs.** An allow-list of Apprise schemes that are network services (email, chat, push,
generic HTTP). Apprise's other plugins — desktop notifications, syslog, local-file or
command-running ones, and any scheme added later — are refused, as are URL parameters that
make a plugin read local files (attachments, PGP key files).

**Where they may connect.** A target URL names a server (``json://host/…``,
``mailto://…?smtp=host``) or a vendor's (``slack://…`` connects to Slack). Apprise's plugins
connect through several libraries (requests, smtplib), none of which takes a network backend,
so the guard sits under all of them: while a notification is sent, ``socket.getaddrinfo``
checks every address it returns against the policy (a context variable set for that send
only), and the plugin connects to those checked addresses. DNS answers that change between a
check and the connection (rebinding) and redirects to other hosts are therefore caught too.
Before Apprise runs, the hosts the URL names are resolved through the same guard, so a refused
address fails the attempt with a clear reason. An environment proxy (``HTTPS_PROXY``) would be
what the guard sees: do not set one for the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import io
import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urlencode, urlsplit, urlunsplit

from mirror.config import NotificationSettings
from mirror.errors import UsageError
from mirror.notify.egress import EgressPolicy, RefusedAddress
from mirror.notify.queues import NOTIFICATIONS, Claimed, Queue
from mirror.notify.sender import SendResult

if TYPE_CHECKING:
    from apprise import AppriseAsset

# Apprise is imported where it is used: loading it and its plugins costs a few hundred
# milliseconds that commands without notifications (most of them) should not pay.

# Network services ctmirror sends to, by scheme; True when the URL's host is the server
# connected to (checked at creation and resolved before each send), False when the plugin
# connects to its vendor (the host part is a token). Every connection is guarded either way.
SCHEMES: dict[str, bool] = {
    "mailto": True, "mailtos": True,  # email over SMTP (host, or smtp=)
    "json": True, "jsons": True, "xml": True, "xmls": True, "form": True, "forms": True,
    "ntfy": True, "ntfys": True, "gotify": True, "gotifys": True,
    "mmost": True, "mmosts": True, "rocket": True, "rockets": True,
    "apprise": True, "apprises": True, "signal": True, "signals": True,
    "nctalk": True, "nctalks": True, "workflow": True, "workflows": True,  # Teams (Workflows)
    "matrix": False, "matrixs": False, "slack": False, "discord": False, "tgram": False,
    "pover": False, "pbul": False, "gchat": False, "webex": False, "wxteams": False,
    "zulip": False, "opsgenie": False, "pagerduty": False, "sendgrid": False,
    "mailgun": False, "resend": False, "postmark": False,
}  # fmt: skip
# Parameters that make a plugin read local files: refused.
_FILE_PARAMS = frozenset({"attach", "attachment", "pgp", "pgppub", "pgpprv", "wkd"})
# Generic HTTP targets carry whatever the receiver needs in their path and parameters.
_GENERIC = frozenset({"json", "jsons", "xml", "xmls", "form", "forms"})
_SECRET_KEY = re.compile(r"^[-+:]|token|key|secret|pass|auth|sig|session|cookie", re.IGNORECASE)
MASK = "****"

Resolver = Callable[..., list[Any]]  # socket.getaddrinfo's signature


@dataclass(frozen=True)
class TargetUrl:
    """An accepted target URL: the service, how it is shown, the hosts it names."""

    url: str
    scheme: str
    service: str  # Apprise's name: "E-Mail", "Slack", "JSON"
    shown: str  # credentials masked
    hosts: tuple[str, ...]  # servers the URL names (empty for vendors)


def check_target_url(url: str, policy: EgressPolicy) -> TargetUrl:
    """``url`` as an accepted target, or UsageError saying why not (never printing secrets)."""
    accepted = _accept(url, policy, explain=True)
    plugin, scheme = accepted.plugin, accepted.scheme
    shown = _shown(plugin, scheme, accepted.keys)
    return TargetUrl(url.strip(), scheme, str(plugin.service_name), shown, accepted.hosts)


@dataclass(frozen=True)
class _Accepted:
    plugin: Any  # Apprise's plugin of the URL
    scheme: str
    keys: set[str]  # the query's parameter names, lower-case
    hosts: tuple[str, ...]


def _accept(url: str, policy: EgressPolicy, explain: bool) -> _Accepted:
    """The checks of :func:`check_target_url`. ``explain`` adds Apprise's own reason to a
    refusal; it captures Apprise's log, which is process-wide, so the sender (on several
    threads at once) goes without."""
    url = url.strip()
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in SCHEMES:
        known = ", ".join(sorted(SCHEMES))
        what = f"scheme {scheme!r}" if scheme else "no scheme"
        raise UsageError(
            f"notification URL: {what} is not a service ctmirror sends to "
            f"(it takes {known}; see docs/notifications.md)"
        )
    keys = _query_keys(url)
    if refused := sorted(keys & _FILE_PARAMS):
        raise UsageError(f"notification URL: {refused[0]}= is not accepted (no local files)")
    plugin, problem = _instantiate(url, explain)
    if plugin is None:
        raise UsageError(f"notification URL {_shown_raw(url)}: not a valid {scheme}:// URL"
                         + (f" ({problem})" if problem else ""))  # fmt: skip
    hosts = _hosts(plugin, SCHEMES[scheme])
    for host in hosts:
        if reason := policy.host_refusal(host):
            raise UsageError(f"notification URL {_shown(plugin, scheme, keys)} refused: {reason}")
    return _Accepted(plugin, scheme, keys, hosts)


def _query(url: str) -> list[tuple[str, str]]:
    """The query's parameters as Apprise reads them: a "+" is a header's mark, not a space."""
    try:
        query = urlsplit(url).query
    except ValueError:
        return []
    pairs = (part.partition("=") for part in query.split("&") if part)
    return [(unquote(key), unquote(value)) for key, _, value in pairs]


def _query_keys(url: str) -> set[str]:
    return {key.lower() for key, _ in _query(url)}


def _instantiate(url: str, explain: bool) -> tuple[Any, str]:
    """Apprise's plugin for ``url`` (no network), or None and Apprise's reason."""
    import apprise

    capture: Any = contextlib.nullcontext(io.StringIO())
    if explain:
        capture = apprise.LogCapture(level=logging.WARNING)  # type: ignore[no-untyped-call]
    with capture as captured:
        try:
            plugin = apprise.Apprise.instantiate(url, asset=_asset())
        except Exception as exc:  # a plugin choking on odd input is an unusable URL too
            return None, type(exc).__name__
    lines = [line.split(" - ", 2)[-1] for line in captured.getvalue().splitlines()]
    reasons = [_hide_values(line, url) for line in lines if not line.startswith("Could not load")]
    return plugin or None, "; ".join(reasons)


def _hide_values(line: str, url: str) -> str:
    """Apprise quotes the values it rejects in parentheses; a value from the URL is hidden."""
    return re.sub(r"\(([^)]+)\)", lambda m: "(…)" if m[1] in url else m[0], line)


def _hosts(plugin: Any, hosted: bool) -> tuple[str, ...]:
    if not hosted:
        return ()
    found = [getattr(plugin, "smtp_host", "") or getattr(plugin, "host", "") or ""]
    return tuple(dict.fromkeys(h for h in found if h))


def _shown(plugin: Any, scheme: str, keys: set[str]) -> str:
    """Apprise's privacy rendering (its credentials and tokens masked), with the parameters
    the user gave only, their secret-looking values and a generic target's path masked too."""
    shown = str(plugin.url(privacy=True))
    parts = urlsplit(shown)
    query = [
        (key, MASK if _SECRET_KEY.search(key) else value)
        for key, value in _query(shown)
        if key.lower() in keys
    ]
    path = parts.path
    if scheme in _GENERIC and path.strip("/").count("/"):
        path = "/" + path.strip("/").split("/", 1)[0] + "/…"
    return str(urlunsplit(parts._replace(path=path, query=urlencode(query, safe="+:*@"))))


def _shown_raw(url: str) -> str:
    """A URL Apprise could not read, shown as scheme and host only."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError:
        host = ""
    return f"{url.split('://', 1)[0]}://{quote(host, safe='.-[]:') or '…'}/…"


def _asset() -> AppriseAsset:
    from apprise import AppriseAsset

    # In memory only: no persistent store on disk; one service per call, in this thread.
    return AppriseAsset(async_mode=False, storage_mode="memory")


# -- the connection guard -----------------------------------------------------------------------

_POLICY: contextvars.ContextVar[EgressPolicy | None] = contextvars.ContextVar(
    "ctmirror_notification_egress", default=None
)
_RESOLVER: contextvars.ContextVar[Resolver | None] = contextvars.ContextVar(
    "ctmirror_notification_resolver", default=None
)
_REFUSALS: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "ctmirror_notification_refusals", default=None
)
_install_lock = threading.Lock()
_installed = False
_real_getaddrinfo = socket.getaddrinfo


class RefusedConnection(OSError):
    """A notification plugin asked to connect where the egress policy forbids."""


def _guarded_getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
    policy = _POLICY.get()
    if policy is None:  # not a notification's send: untouched
        return _real_getaddrinfo(host, port, *args, **kwargs)
    infos = (_RESOLVER.get() or _real_getaddrinfo)(host, port, *args, **kwargs)
    name = host.decode() if isinstance(host, bytes) else str(host)
    try:
        policy.check_addresses(name, [str(info[4][0]) for info in infos])
    except RefusedAddress as exc:
        refusals = _REFUSALS.get()
        if refusals is not None:
            refusals.append(str(exc))
        raise RefusedConnection(str(exc)) from None
    return infos


def install_guard() -> None:
    """Put the guard under ``socket.getaddrinfo`` (once per process; a no-op outside sends)."""
    global _installed, _real_getaddrinfo
    with _install_lock:
        if not _installed:
            _real_getaddrinfo, socket.getaddrinfo = socket.getaddrinfo, _guarded_getaddrinfo
            _installed = True


# -- the sender ---------------------------------------------------------------------------------


class AppriseNotifier:
    """Sends one notification (a title, and its body as plain text and as Markdown) to one
    target URL; the answer is a SendResult. Never raises for a service's failure."""

    def __init__(self, settings: NotificationSettings, resolver: Resolver | None = None) -> None:
        self.settings = settings
        self.policy = EgressPolicy.of(settings)
        self._resolver = resolver
        install_guard()

    async def send(self, url: str, title: str, text: str, markdown: str) -> SendResult:
        started = time.monotonic()
        result = await asyncio.to_thread(self._send, url, title, text, markdown)
        return SendResult(
            result.status_code, result.body, result.error, time.monotonic() - started,
            result.accepted,
        )  # fmt: skip

    def _send(self, url: str, title: str, text: str, markdown: str) -> SendResult:
        refusals: list[str] = []
        policy, resolver = _POLICY.set(self.policy), _RESOLVER.set(self._resolver)
        refused = _REFUSALS.set(refusals)
        try:
            accepted = _accept(url, self.policy, explain=False)
            for host in accepted.hosts:  # resolved through the guard before Apprise connects
                _resolve(host)
            return self._notify(accepted.plugin, title, text, markdown, refusals)
        except (RefusedConnection, UsageError) as exc:
            return SendResult(None, error=f"refused: {getattr(exc, 'message', exc)}")
        except OSError as exc:
            return SendResult(None, error=f"{type(exc).__name__}: {exc}")
        finally:
            _POLICY.reset(policy)
            _RESOLVER.reset(resolver)
            _REFUSALS.reset(refused)

    def _notify(
        self, plugin: Any, title: str, text: str, markdown: str, refusals: Sequence[str]
    ) -> SendResult:
        from apprise import Apprise, NotifyFormat

        targets = Apprise(asset=_asset())
        targets.add(plugin)
        formats = plugin.notify_format
        preferred = formats[0] if isinstance(formats, tuple | list) else formats
        plain = preferred == NotifyFormat.TEXT
        result = targets.notify(
            body=text if plain else markdown, title=title,
            body_format=NotifyFormat.TEXT if plain else NotifyFormat.MARKDOWN,
            timeout=self.settings.timeout_seconds,
        )  # fmt: skip
        if result:
            return SendResult(None, accepted=True)
        said = [entry.message for service in result for entry in service.logs()]
        reasons = [*(f"refused: {r}" for r in refusals), *said]
        return SendResult(None, error="; ".join(reasons) or result.status.name.lower(),
                          accepted=False)  # fmt: skip


def _resolve(host: str) -> None:
    try:
        socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except RefusedConnection:
        raise
    except OSError as exc:
        raise OSError(f"cannot resolve {host}: {exc}") from None


def with_message_id(url: str, message_id: str) -> str:
    """A generic HTTP target's URL sending the message id as a header (``Ctmirror-Message-Id``),
    the same on every attempt, so receivers can de-duplicate; other URLs as they are."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in _GENERIC:
        return url
    header = f"+Ctmirror-Message-Id={message_id}"
    return urlunsplit(parts._replace(query=f"{parts.query}&{header}" if parts.query else header))


@dataclass
class NotificationChannel:
    """Notifications for people, sent by an :class:`AppriseNotifier`."""

    notifier: AppriseNotifier
    queue: Queue = NOTIFICATIONS

    async def send(self, item: Claimed) -> SendResult:
        data = item.data
        url = with_message_id(data["url"], item.message_id)
        return await self.notifier.send(url, data["title"], data["body_text"],
                                        data["body_markdown"])  # fmt: skip
