"""The SSRF guard's address check: which addresses a crawl may connect to, and how a host is resolved.

``Fetcher`` resolves every host before it connects and refuses the connection when any address
of the host is not globally routable (see :mod:`pipeline.crawl.fetcher`).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable

_NAT64 = ipaddress.ip_network("64:ff9b::/96")

Resolver = Callable[[str], list[str]]


class BlockedAddress(Exception):
    """The host resolves to an address the SSRF guard refuses."""


def is_blocked_address(address: str) -> bool:
    """True for any address that is not globally routable, including IPv6 addresses
    embedding a non-global IPv4 address."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        # Judge the IPv4 address inside: these forms reach it (mapped, 6to4, Teredo, NAT64).
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            return is_blocked_address(str(embedded))
    return not ip.is_global or ip.is_multicast or ip.is_reserved or ip.is_unspecified


def system_resolver(host: str) -> list[str]:
    """Every address ``getaddrinfo`` gives for ``host``."""
    infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))
