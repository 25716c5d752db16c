"""The caller's address for logs: the peer, or — only when the peer is a trusted proxy —
the nearest untrusted hop of ``X-Forwarded-For`` (rightmost first, as proxies append)."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def trusted_networks(cidrs: Sequence[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


def _trusted(address: str, networks: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def source_ip(peer: str | None, forwarded_for: str | None, networks: Sequence[Network]) -> str:
    if not peer:
        return "unknown"
    if not forwarded_for or not _trusted(peer, networks):
        return peer
    for hop in reversed([h.strip() for h in forwarded_for.split(",")][-16:]):
        if not _trusted(hop, networks):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return peer  # a malformed hop: believe nothing past it
    return peer
