"""Where webhooks may send: the URL rules at creation, and the address rules at every connect.

A webhook makes this service send requests where an admin says, so a stolen admin credential must not turn
it into a probe of the network it runs in (the cloud metadata endpoint, the database, an internal admin
port). By default only public addresses are reached: loopback, private (RFC 1918, unique-local fc00::/7),
link-local (169.254/16 with the metadata endpoint, fe80::/10), unspecified, 0.0.0.0/8, CGNAT 100.64/10,
multicast, reserved and documentation ranges, IPv4-mapped and 6to4 forms of those are refused. As GitLab
and Gitea do, an operator opens them with ``BUILDSTATE_WEBHOOK_ALLOW_PRIVATE=true`` (a Concourse on the
same private network needs it) or by naming the host, or its address or network, in
``BUILDSTATE_WEBHOOK_ALLOWED_HOSTS``.

The address rule is checked where the socket is made (``TargetPolicy.socket_factory``, given to aiohttp's
connector), on the address actually connected to, after DNS: a name that resolved to a public address when
the webhook was created and to 127.0.0.1 now (DNS rebinding) is refused all the same, and so is every
spelling of an address (``2130706433``, ``0x7f.1``, ``[::ffff:127.0.0.1]``). Creation checks what it can
without DNS: the URL as the client will read it (yarl, not ``urlsplit``: the two disagree on hostile URLs,
and a URL only the second accepts made aiohttp echo it, token and all, into an error), and literal
addresses.
"""

from __future__ import annotations

import contextlib
import contextvars
import ipaddress
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from yarl import URL

from buildstate.config import Settings
from buildstate.errors import Unprocessable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

ALLOW_PRIVATE_SETTING = "BUILDSTATE_WEBHOOK_ALLOW_PRIVATE"
ALLOWED_HOSTS_SETTING = "BUILDSTATE_WEBHOOK_ALLOWED_HOSTS"
REFUSED = (
    "refused by policy: the target is not a public address (loopback, private, link-local or another "
    f"special range); allow it with {ALLOW_PRIVATE_SETTING}=true, or name its host or network in "
    f"{ALLOWED_HOSTS_SETTING}"
)
# The host of the request being sent, for the socket factory (which aiohttp gives only the address).
_sending_to: contextvars.ContextVar[str | None] = contextvars.ContextVar("webhook_host", default=None)


class TargetRefused(OSError):
    """A connection the policy does not allow (an ``OSError`` so that aiohttp reports it as a failed
    connect, wrapped in ``ClientConnectorError``)."""

    def __init__(self) -> None:
        super().__init__(REFUSED)


def is_public(address: IPAddress) -> bool:
    """A unicast address on the public internet (what ``ipaddress`` calls global, minus the odd ones)."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return False  # ::ffff:a.b.c.d: only ever a way to spell an IPv4 address past a check
        if address.sixtofour is not None and not is_public(address.sixtofour):
            return False
    return address.is_global and not (address.is_multicast or address.is_reserved)


def _host_key(host: str) -> str:
    return host.lower().rstrip(".")


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return _legacy_ipv4(host)
    return True


def _legacy_ipv4(host: str) -> bool:
    """``2130706433``, ``127.1``, ``0x7f.0.0.1``: numbers the C resolver reads as an IPv4 address."""
    if not host or not all(ch in "0123456789abcdefx." for ch in host):
        return False
    try:
        socket.inet_aton(host)
    except OSError:
        return False
    return True


@dataclass(frozen=True)
class TargetPolicy:
    names: tuple[str, ...] = ()  # "ci.example.com", "*.example.com"
    networks: tuple[IPNetwork, ...] = ()  # addresses and networks from the allow-list
    allow_private: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> TargetPolicy:
        names: list[str] = []
        networks: list[IPNetwork] = []
        for entry in settings.webhook_allowed_hosts:
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                names.append(_host_key(entry))
        return cls(tuple(names), tuple(networks), settings.webhook_allow_private)

    @property
    def restricted(self) -> bool:
        """An allow-list is set: only the hosts on it may be targeted."""
        return bool(self.names or self.networks)

    def _named(self, host: str) -> bool:
        key = _host_key(host)
        return any(key == name or (name.startswith("*.") and key.endswith(name[1:])) for name in self.names)

    def _in_networks(self, address: IPAddress) -> bool:
        return any(address in network for network in self.networks)

    # ------------------------------------------------------------------ at creation

    def check_url(self, url: str) -> URL:
        """The URL as aiohttp will read it; 422 for anything it cannot or may not send to."""
        try:
            parsed = URL(url)
            port = parsed.port  # yarl checks the range here (99999 is refused)
        except (ValueError, TypeError):
            raise Unprocessable(
                "the webhook URL cannot be parsed (check the host and the port, 1-65535)",
                slug="bad-webhook-url",
            ) from None
        if parsed.scheme not in {"http", "https"} or not parsed.host or port is None:
            raise Unprocessable(
                "a webhook URL must be http:// or https:// with a host", slug="bad-webhook-url"
            )
        if parsed.user is not None or parsed.password is not None:
            raise Unprocessable(
                "put credentials in the webhook secret, not in the URL", slug="bad-webhook-url"
            )
        host = parsed.host
        if host.endswith(".") and _is_address(host[:-1]):  # a name to yarl, an address nowhere: unusable
            raise Unprocessable(
                f"webhook host {host!r} is an address with a dot after it: write it without the dot",
                slug="bad-webhook-url",
            )
        try:
            literal: IPAddress | None = ipaddress.ip_address(host)
        except ValueError:
            literal = None
            if _legacy_ipv4(host):
                raise Unprocessable(
                    f"webhook host {host!r} is a number, not a name or an address: write the address as "
                    "a.b.c.d",
                    slug="bad-webhook-url",
                ) from None
        if self.restricted and not (
            self._named(host) or (literal is not None and self._in_networks(literal))
        ):
            raise Unprocessable(
                f"webhook host {host!r} is not in {ALLOWED_HOSTS_SETTING}", slug="webhook-host-denied"
            )
        if literal is not None and not self.permits(literal, host):
            raise Unprocessable(REFUSED, slug="webhook-target-refused")
        return parsed

    # ------------------------------------------------------------------ at connect time

    def permits(self, address: IPAddress, host: str | None) -> bool:
        if self.allow_private or is_public(address) or self._in_networks(address):
            return True
        return host is not None and self._named(host)

    @contextlib.contextmanager
    def sending_to(self, host: str) -> Iterator[None]:
        """Around a request: tells the socket factory which host the addresses it sees belong to."""
        token = _sending_to.set(host)
        try:
            yield
        finally:
            _sending_to.reset(token)

    def socket_factory(self, addr_info: tuple[Any, ...]) -> socket.socket:
        """aiohttp's ``TCPConnector(socket_factory=...)``: every connection attempt, with its address."""
        family, kind, proto, _, sockaddr = addr_info
        address = ipaddress.ip_address(sockaddr[0].split("%", 1)[0])  # drop an IPv6 zone (fe80::1%eth0)
        if not self.permits(address, _sending_to.get()):
            raise TargetRefused
        return socket.socket(family=family, type=kind, proto=proto)
