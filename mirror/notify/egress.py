"""Where deliveries may connect: the address policy and the HTTP transport enforcing it.

A subscriber chooses the URL, so a delivery is a request the mirror makes on someone else's
behalf. Link-local and cloud-metadata addresses are refused always; private ranges unless
``<section>.allow_private``; loopback unless ``<section>.allow_loopback`` is turned off (each
channel has its section: ``webhooks``, ``notifications``).

The check happens where the connection is made (:class:`GuardedBackend`): the host is resolved
once, *every* resolved address is checked, and the socket connects to one of those checked
addresses. A DNS answer that changes between a check and the connection (DNS rebinding)
therefore cannot slip a forbidden address through. TLS still verifies the certificate against
the URL's host name.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import anyio
import certifi
import httpcore
import httpx

from mirror.config import NotificationSettings, WebhookSettings
from mirror.errors import UsageError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]

_net = ipaddress.ip_network
# Refused whatever the settings: link-local (where cloud metadata services live), the metadata
# services' own addresses, "this network", multicast, broadcast and reserved space.
ALWAYS_REFUSED = (
    _net("169.254.0.0/16"), _net("fe80::/10"), _net("0.0.0.0/8"), _net("::/128"),
    _net("100.100.100.200/32"), _net("fd00:ec2::254/128"), _net("224.0.0.0/4"),
    _net("ff00::/8"), _net("240.0.0.0/4"),
)  # fmt: skip
LOOPBACK = (_net("127.0.0.0/8"), _net("::1/128"))
PRIVATE = (
    _net("10.0.0.0/8"), _net("172.16.0.0/12"), _net("192.168.0.0/16"), _net("100.64.0.0/10"),
    _net("198.18.0.0/15"), _net("fc00::/7"), _net("fec0::/10"),
)  # fmt: skip
METADATA_HOSTS = frozenset(
    {
        "metadata", "metadata.google.internal", "metadata.goog", "instance-data",
        "instance-data.ec2.internal", "metadata.azure.com", "metadata.platformequinix.com",
    }
)  # fmt: skip


# The resolver as the standard library has it, for reading numeric hosts: the notification guard
# (mirror.notify.notifier) later wraps socket.getaddrinfo and calls back into this module.
_getaddrinfo = socket.getaddrinfo


class RefusedAddress(httpcore.ConnectError):
    """The receiver's host is (or resolves to) an address deliveries may not reach."""


@dataclass(frozen=True)
class EgressPolicy:
    allow_private: bool = False
    allow_loopback: bool = True
    section: str = "webhooks"  # where the settings are, for messages

    @classmethod
    def of(cls, settings: WebhookSettings | NotificationSettings) -> EgressPolicy:
        """The policy a channel's settings (``[webhooks]``, ``[notifications]``) ask for."""
        section = "webhooks" if isinstance(settings, WebhookSettings) else "notifications"
        return cls(settings.allow_private, settings.allow_loopback, section)

    def refusal(self, address: IPAddress) -> str | None:
        """Why ``address`` may not be reached, or None when it may."""
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if _within(address, ALWAYS_REFUSED):
            return f"{address} is a link-local, metadata or reserved address"
        if _within(address, LOOPBACK) and not self.allow_loopback:
            return f"{address} is a loopback address ({self.section}.allow_loopback is off)"
        if _within(address, PRIVATE) and not self.allow_private:
            return f"{address} is a private address ({self.section}.allow_private is off)"
        return None

    def host_refusal(self, host: str) -> str | None:
        """Why a URL naming ``host`` may not be used, as far as the name shows: a metadata
        service, or an address however spelt (``2852039166`` and ``0xa9fea9fe`` are
        169.254.169.254 to the resolver). Other names are resolved and checked at each send."""
        host = host.rstrip(".").lower()
        if host in METADATA_HOSTS:
            return f"{host} is a cloud metadata service"
        address = literal_address(host)
        return self.refusal(address) if address is not None else None

    def check_url(self, url: str) -> str:
        """``url`` if a subscription may use it, else UsageError saying why not.

        Host names are checked again, resolved, at every delivery; here only what the URL
        itself shows (scheme, credentials, a literal address, a metadata host name).
        """
        try:
            parts = urlsplit(url.strip())
            hostname = parts.hostname
            httpx.URL(url.strip())  # what delivery will send to: a host IDNA cannot encode fails
        except (ValueError, httpx.InvalidURL):  # e.g. an unclosed "[" of an IPv6 address
            raise UsageError(f"webhook URL {url!r}: not a valid URL") from None
        if parts.scheme not in ("http", "https") or not hostname:
            raise UsageError(f"webhook URL {url!r}: must be an http:// or https:// URL with a host")
        if parts.username is not None or parts.password is not None:
            raise UsageError(
                f"webhook URL {url!r}: credentials in the URL are not accepted "
                "(receivers authenticate deliveries by their signature)"
            )
        try:
            port = parts.port
        except ValueError:
            raise UsageError(f"webhook URL {url!r}: the port is not a number") from None
        if port == 0:
            raise UsageError(f"webhook URL {url!r}: port 0 is not a port")
        if reason := self.host_refusal(hostname):
            raise UsageError(f"webhook URL {url!r} refused: {reason}")
        return url.strip()

    def check_addresses(self, host: str, addresses: Iterable[str]) -> list[str]:
        """The resolved ``addresses`` of ``host``; RefusedAddress if any of them is refused."""
        found = list(dict.fromkeys(addresses))
        if host.rstrip(".").lower() in METADATA_HOSTS:
            raise RefusedAddress(f"{host} is a cloud metadata service")
        for text in found:
            reason = self.refusal(ipaddress.ip_address(text.split("%", 1)[0]))
            if reason:
                named = literal_address(host) is None
                raise RefusedAddress(f"{host} resolves to {reason}" if named else reason)
        if not found:
            raise RefusedAddress(f"{host} resolves to no address")
        return found


def _within(address: IPAddress, networks: Iterable[Any]) -> bool:
    return any(address.version == net.version and address in net for net in networks)


def literal_address(host: str) -> IPAddress | None:
    """The address ``host`` spells, read as the resolver reads it (decimal, hex and octal
    IPv4 forms included), without asking DNS; None for a name."""
    host = host.strip("[]")
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:
        infos = _getaddrinfo(host, None, flags=socket.AI_NUMERICHOST)
    except (OSError, UnicodeError, ValueError):
        return None
    return ipaddress.ip_address(str(infos[0][4][0]).split("%", 1)[0])


async def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (a literal address resolves to itself)."""
    try:
        infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
    return [str(info[4][0]) for info in infos]


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """Connects only to addresses the policy allows, resolving each host exactly once."""

    def __init__(self, policy: EgressPolicy, resolver: Resolver = resolve) -> None:
        self._policy = policy
        self._resolve = resolver
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = self._policy.check_addresses(host, await self._resolve(host, port))
        error: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        assert error is not None
        raise error

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        raise RefusedAddress("webhooks are never delivered over unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport with :class:`GuardedBackend` underneath; proxies from the environment
    are ignored (a proxy would connect where the policy cannot see)."""

    def __init__(
        self, policy: EgressPolicy, *, limits: httpx.Limits, resolver: Resolver = resolve
    ) -> None:
        super().__init__(trust_env=False, limits=limits)
        # httpx offers no way to pass a network backend; build its connection pool again, alike
        # but for the backend.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl.create_default_context(cafile=certifi.where()),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=GuardedBackend(policy, resolver),
        )
