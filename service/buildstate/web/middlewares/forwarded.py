"""The client's own address behind a reverse proxy (``BUILDSTATE_TRUSTED_PROXIES``).

Behind nginx every request comes from nginx's address, so per-client sign-in throttling would lump all
clients together (20 failures from anyone would lock everyone out) and the audit log would record the
proxy. When the direct peer is a trusted proxy, the client is the right-most ``X-Forwarded-For`` hop that
is not itself a trusted proxy: hops further left were written by the client and prove nothing. With no
trusted proxies (the default) the header is ignored, so nobody can choose their own address.

The middleware goes first, outside ``request_id``, so every later middleware and handler (audit rows,
throttling, the access log) sees the same address as ``request.remote``.
"""

from __future__ import annotations

from collections.abc import Iterable
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

from aiohttp import web
from aiohttp.typedefs import Middleware

from buildstate.web.routing import Handler


def _address(text: str) -> IPv4Address | IPv6Address | None:
    """An address, or None; an IPv6 zone (``fe80::1%eth0``) is local to a host and never a client's: it
    would let a header write any text into the client address that audit rows and throttling use."""
    try:
        address = ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, IPv6Address) and address.scope_id is not None:
        return None
    return address


def forwarded_client(trusted: Iterable[str]) -> Middleware:
    networks: list[IPv4Network | IPv6Network] = [ip_network(n.strip(), strict=False) for n in trusted]

    def is_trusted(address: IPv4Address | IPv6Address) -> bool:
        return any(address in network for network in networks)

    @web.middleware
    async def real_client(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not networks:  # the default: nobody's X-Forwarded-For counts, and nothing to parse
            return await handler(request)
        peer = _address(request.remote or "")
        if peer is not None and is_trusted(peer):
            hops = ",".join(request.headers.getall("X-Forwarded-For", [])).split(",")
            for hop in reversed([h for h in hops if h.strip()]):
                address = _address(hop)
                if address is None:  # a garbled hop: trust nothing further left
                    break
                if not is_trusted(address):
                    return await handler(request.clone(remote=str(address)))
        return await handler(request)

    return real_client
