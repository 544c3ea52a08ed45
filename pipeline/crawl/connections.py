"""Connections that go only where the SSRF check allowed, pooled per host name.

Requests keep their host name in the URL, so httpx pools connections by
``(scheme, host name, port)`` and TLS sends SNI for, and verifies the certificate
against, that name. Only the step that opens a TCP connection swaps the name for the
address the fetcher's SSRF check passed (:class:`PinnedBackend`): a DNS answer that
changes after the check cannot redirect the connection, and a connection verified for
one host is never reused for another host that shares its address.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterable
from typing import Any

import httpcore
import httpx


class PinnedBackend(httpcore.AsyncNetworkBackend):
    """Opens each connection to ``pinned_address(host name)``, through ``inner``."""

    def __init__(self, pinned_address: Callable[[str], str], inner: httpcore.AsyncNetworkBackend) -> None:
        self._pinned_address = pinned_address
        self._inner = inner

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        return await self._inner.connect_tcp(self._pinned_address(host), port, timeout, local_address, socket_options)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("the crawler connects over TCP only")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class PinnedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport, with a connection pool that connects through ``backend``."""

    def __init__(self, backend: PinnedBackend, ssl_context: ssl.SSLContext | None) -> None:
        super().__init__(trust_env=False)
        # httpx 0.28 takes no network backend, so the pool it built is replaced by one with ours.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context or httpx.create_ssl_context(trust_env=False),
            max_connections=None,
            max_keepalive_connections=64,
            keepalive_expiry=5.0,
            network_backend=backend,
        )
