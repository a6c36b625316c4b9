"""Who a request comes from, for the per-address limits.

The connection's peer is the client, unless the peer is one of ``SHELFSIGHT_TRUSTED_PROXIES``:
then ``X-Forwarded-For`` is read from the right (each proxy appends the address it saw) and
the first address that is not itself a trusted proxy is the client. Anything to its left was
written by the client and could be anything, so it is never read.

An IPv6 client gets a whole /64 from its provider, so it is grouped by that /64: one address
per request would otherwise be a fresh bucket each time.

>>> proxies = networks("10.0.0.0/8")
>>> client_address("10.0.0.5", ["6.6.6.6, 203.0.113.7"], proxies)
'203.0.113.7'
>>> client_address("198.51.100.1", ["203.0.113.7"], proxies)  # not a proxy: its header is not believed
'198.51.100.1'
>>> client_address("10.0.0.5", ["203.0.113.7:5123"], proxies)  # a proxy that adds the client's port
'203.0.113.7'
>>> client_address("2001:db8:1:2:aaaa::1", [], proxies)
'2001:db8:1:2::/64'
"""

import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def networks(text: str) -> tuple[Network, ...]:
    """The networks of ``SHELFSIGHT_TRUSTED_PROXIES`` (validated by the settings already)."""
    return tuple(ipaddress.ip_network(item.strip(), strict=False) for item in text.split(",") if item.strip())


def client_address(peer: str | None, forwarded_for: Iterable[str], trusted: tuple[Network, ...]) -> str:
    """The key the per-address limits count ``peer``'s request under."""
    address = _parse(peer)
    if address is None:
        return peer or "unknown"
    if trusted and _within(address, trusted):
        hops = [hop.strip() for header in forwarded_for for hop in header.split(",")]
        for hop in reversed(hops):
            previous, address = address, _parse(hop)
            if address is None:  # garbage a trusted proxy passed on: count it as that proxy's
                address = previous
                break
            if not _within(address, trusted):
                break
    return group(address)


def group(address: Address) -> str:
    """An IPv4 address as it is; an IPv6 one as its /64 (an IPv4-mapped one as the IPv4 address)."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def _parse(text: str | None) -> Address | None:
    """An address as a peer or a proxy writes it; some proxies add the port they saw it on.

    >>> [str(_parse(t)) for t in ("203.0.113.7:5123", "[2001:db8::1]:443", "2001:db8::1", "nonsense:1")]
    ['203.0.113.7', '2001:db8::1', '2001:db8::1', 'None']
    """
    if not text:
        return None
    text = text.strip()
    if text.startswith("["):  # [IPv6]:port, or [IPv6]
        text = text[1:].split("]", 1)[0]
    elif text.count(":") == 1:  # IPv4:port (an IPv6 address has at least two colons)
        text = text.split(":", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _within(address: Address, trusted: tuple[Network, ...]) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address.version == net.version and address in net for net in trusted)
