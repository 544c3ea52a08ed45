"""Polite, bounded, SSRF-guarded HTTP fetching on top of ``httpx.AsyncClient``.

What one :meth:`Fetcher.fetch` does:

- **SSRF guard** (the address check is :mod:`pipeline.crawl.addresses`). Before every
  connection (every redirect hop and retry) the host is resolved (``getaddrinfo`` in a
  thread, or the injected resolver) and refused with ``blocked_address`` when ANY
  address is not globally routable: private, loopback, link-local, multicast, reserved,
  unspecified, shared (CGNAT), documentation ranges, and IPv6 forms that embed such an
  IPv4 address (``::ffff:a.b.c.d``, 6to4, NAT64).
  The connection then goes to the checked address itself (the network backend
  connects to the address checked for the URL's host name), so a DNS answer that
  changes between check and connect (rebinding) cannot redirect it. Requests keep the
  host name, so connections are pooled per host name and TLS (SNI, certificate check)
  is done for that name: a connection verified for one host is never reused for
  another host on the same address. ``trust_env`` is off so an environment proxy
  cannot bypass this either.
- **Politeness** (:mod:`pipeline.crawl.host_pacing`). Per host (``scheme://host:port``): a semaphore bounds requests in
  flight and a minimum delay separates request starts; a ``Retry-After`` pushes the
  host's next start back for every worker.
- **Deadlines.** httpx connect/read/write/pool timeouts plus an overall deadline for
  each attempt, body included.
- **Retries.** Connect errors, timeouts, broken connections, 429 and 5xx are retried
  with exponential backoff and full jitter; ``Retry-After`` (seconds or HTTP-date) is
  used instead when present. A ``Retry-After`` beyond ``max_retry_after`` is not waited
  for: the fetch gives up at once rather than hold a worker that long.
- **Redirects** are followed by hand so each hop passes the SSRF guard and the caller's
  ``check_redirect`` (scope, robots, duplicates), with a hop limit and loop detection.
  A ``Location`` that is not a usable http(s) URL ends the fetch with ``bad_redirect``
  (a URL the client cannot parse at all, passed in directly, with ``bad_url``).
- **Size cap** enforced while streaming, on the bytes received and on the decoded
  bytes alike (``Content-Encoding`` is undone here, piece by piece, see
  :mod:`pipeline.crawl.content_coding`): ``too_large``, or the first ``max_bytes``
  kept when ``truncate`` (robots.txt). A coding that cannot be undone is
  ``bad_encoding``; more than two stacked, ``too_many_encodings``.
- **Body only when useful**: a response the caller's ``accept`` rejects (e.g. not HTML) is
  closed without reading its body. The body of a non-200 response is not kept either, but a
  small one (a 304 has none) is read to its end, so the connection goes back to the pool:
  closing a response part-read closes its connection, and revalidating every known page would
  then open (and, over https, handshake) one connection per page. A large one, or one of
  unknown length, is not downloaded: its connection is closed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import ssl
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from http.cookiejar import CookieJar, DefaultCookiePolicy

import httpcore
import httpx

from pipeline.crawl.addresses import BlockedAddress, Resolver, is_blocked_address, system_resolver
from pipeline.crawl.connections import PinnedBackend, PinnedTransport
from pipeline.crawl.content_coding import ACCEPT_ENCODING, ContentCodingError, read_capped
from pipeline.crawl.host_pacing import HostSlot, parse_retry_after
from pipeline.crawl.urls import normalize_url, origin_of

DEFAULT_USER_AGENT = "docs-to-answer-pipeline/0.1 (+https://github.com/docs-to-answer/pipeline)"
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
BODY_STATUSES = frozenset({200, 203})
# Statuses whose response has no body, whatever its headers say (RFC 9110).
NO_BODY_STATUSES = frozenset({204, 304})
# An unwanted body up to this size is read to its end to keep the connection: cheaper than a new one.
MAX_DRAINED_BYTES = 64 * 1024

Accept = Callable[[httpx.Headers], str | None]
CheckRedirect = Callable[[str], Awaitable[str | None]]


@dataclass(frozen=True)
class FetchConfig:
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    write_timeout: float = 30.0
    pool_timeout: float = 30.0
    request_deadline: float = 60.0  # one attempt, headers and body
    max_retries: int = 3
    backoff_base: float = 0.5  # attempt n sleeps uniform(0, min(backoff_max, base * 2**n))
    backoff_max: float = 30.0
    max_retry_after: float = 120.0
    max_redirects: int = 5
    max_page_bytes: int = 5 * 1024 * 1024


@dataclass(frozen=True)
class FetchResult:
    url: str  # the URL asked for
    final_url: str  # the last hop (the refused target when a redirect was refused)
    status: int | None  # of the last response; None when no response
    headers: httpx.Headers
    body: bytes | None  # only for an accepted 200/203 response
    error: str | None  # why the fetch stopped short; statuses are left to the caller
    bytes_downloaded: int  # body bytes over the wire, every attempt and hop
    redirects: tuple[str, ...] = ()  # the hops followed after ``url``


class _UnusableLocation(Exception):
    """A redirect whose ``Location`` httpx cannot parse."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(response.status_code)
        self.status = response.status_code
        self.headers = response.headers


async def _refuse_unusable_location(response: httpx.Response) -> None:
    """httpx builds the next request of every redirect, even one it does not follow, and
    raises on a ``Location`` it cannot parse: ``InvalidURL`` disguised as a protocol
    error (``http://0177.0.0.1/``, retried as if the network failed) or a bare
    ``IDNAError`` (``http://xn--/``). Refused here first, it ends the fetch as
    ``bad_redirect``."""
    if response.has_redirect_location:
        try:
            # Reading .host is the check: httpx decodes an IDNA host only then.
            httpx.URL(response.headers["location"]).host  # noqa: B018
        except (httpx.InvalidURL, UnicodeError):
            raise _UnusableLocation(response) from None


@dataclass(frozen=True)
class _Attempt:
    status: int | None = None
    headers: httpx.Headers = field(default_factory=httpx.Headers)
    body: bytes | None = None
    error: str | None = None
    bytes_downloaded: int = 0
    retryable: bool = False
    retry_after: float | None = None


class Fetcher:
    """One crawl's HTTP client; use as ``async with Fetcher(...) as fetcher``."""

    def __init__(
        self,
        *,
        user_agent: str = DEFAULT_USER_AGENT,
        config: FetchConfig | None = None,
        allow_private_hosts: bool = False,
        max_concurrency_per_host: int = 4,
        delay_seconds: float = 0.0,
        resolver: Resolver | None = None,
        network_backend: httpcore.AsyncNetworkBackend | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """``resolver``, ``network_backend`` (what finally opens connections to checked
        addresses) and ``ssl_context`` (what TLS trusts) replace the system's."""
        self.config = config or FetchConfig()
        self.allow_private_hosts = allow_private_hosts
        self.requests = 0
        self.bytes_downloaded = 0
        self._concurrency = max_concurrency_per_host
        self._delay = delay_seconds
        self._resolver = resolver or system_resolver
        self._addresses: dict[str, list[str] | OSError] = {}
        self._slots: dict[str, HostSlot] = {}
        c = self.config
        self._client = httpx.AsyncClient(
            transport=PinnedTransport(
                PinnedBackend(self._pinned_address, network_backend or httpcore.AnyIOBackend()), ssl_context
            ),
            # Only what content_coding can undo under the size cap.
            headers={"User-Agent": user_agent, "Accept-Encoding": ACCEPT_ENCODING},
            timeout=httpx.Timeout(
                connect=c.connect_timeout, read=c.read_timeout, write=c.write_timeout, pool=c.pool_timeout
            ),
            follow_redirects=False,
            event_hooks={"response": [_refuse_unusable_location]},
            trust_env=False,
            cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),  # a crawler needs none
        )

    async def __aenter__(self) -> Fetcher:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._client.aclose()

    def raise_host_delay(self, origin: str, seconds: float) -> None:
        """Make ``origin``'s minimum delay at least ``seconds`` (robots.txt Crawl-delay)."""
        slot = self._slot(origin)
        slot.delay = max(slot.delay, seconds)

    async def fetch(
        self,
        url: str,
        *,
        accept: Accept | None = None,
        max_bytes: int | None = None,
        truncate: bool = False,
        headers_for: Callable[[str], Mapping[str, str]] | None = None,
        check_redirect: CheckRedirect | None = None,
        not_followed: Collection[int] = (),
    ) -> FetchResult:
        """GET ``url`` (normalised), following redirects, except a redirect of ``url`` itself
        whose status is in ``not_followed``, which comes back as it is; never raises for network
        or HTTP problems, which come back as ``error``/``status``."""
        chain = [url]
        downloaded = 0
        while True:
            extra = dict(headers_for(chain[-1])) if headers_for else {}
            attempt = await self._with_retries(
                chain[-1], extra, accept, max_bytes or self.config.max_page_bytes, truncate
            )
            downloaded += attempt.bytes_downloaded
            self.bytes_downloaded += attempt.bytes_downloaded
            location = attempt.headers.get("location")
            held = len(chain) == 1 and attempt.status in not_followed
            if attempt.error or attempt.status not in REDIRECT_STATUSES or not location or held:
                return FetchResult(
                    url,
                    chain[-1],
                    attempt.status,
                    attempt.headers,
                    attempt.body,
                    attempt.error,
                    downloaded,
                    tuple(chain[1:]),
                )
            target = normalize_url(location, chain[-1])
            error: str | None
            if target is None:
                error = "bad_redirect"
            elif target in chain:
                error = "redirect_loop"
            elif len(chain) > self.config.max_redirects:
                error = "too_many_redirects"
            else:
                error = await check_redirect(target) if check_redirect else None
            if error or target is None:
                return FetchResult(
                    url, target or chain[-1], attempt.status, attempt.headers, None, error, downloaded, tuple(chain[1:])
                )
            chain.append(target)

    async def _with_retries(
        self, url: str, headers: dict[str, str], accept: Accept | None, max_bytes: int, truncate: bool
    ) -> _Attempt:
        downloaded = 0
        for number in range(self.config.max_retries + 1):
            attempt = await self._attempt(url, headers, accept, max_bytes, truncate)
            downloaded += attempt.bytes_downloaded
            if not attempt.retryable or number == self.config.max_retries:
                break
            if attempt.retry_after is not None:
                if attempt.retry_after > self.config.max_retry_after:
                    break
                delay = attempt.retry_after
            else:
                delay = random.uniform(0, min(self.config.backoff_max, self.config.backoff_base * 2**number))
            await asyncio.sleep(delay)
        return _Attempt(attempt.status, attempt.headers, attempt.body, attempt.error, downloaded)

    async def _attempt(
        self, url: str, headers: dict[str, str], accept: Accept | None, max_bytes: int, truncate: bool
    ) -> _Attempt:
        try:
            target = httpx.URL(url)
        except (httpx.InvalidURL, UnicodeError):  # normalize_url refuses these; a caller may not have used it
            return _Attempt(error="bad_url")
        try:
            await self._check_host(target.raw_host.decode("ascii"))
        except BlockedAddress:
            return _Attempt(error="blocked_address")
        except OSError:
            return _Attempt(error="dns_error")
        slot = self._slot(origin_of(url))
        async with slot.turn():
            self.requests += 1
            request = self._client.build_request("GET", target, headers=headers)
            response: httpx.Response | None = None
            try:
                async with asyncio.timeout(self.config.request_deadline):
                    response = await self._client.send(request, stream=True)
                    try:
                        return await self._read(response, slot, accept, max_bytes, truncate)
                    finally:
                        await response.aclose()
            except _UnusableLocation as refused:
                return _Attempt(refused.status, refused.headers, error="bad_redirect")
            except (TimeoutError, httpx.TimeoutException):
                return _Attempt(error="timeout", retryable=True, bytes_downloaded=_downloaded(response))
            except httpx.ConnectError:
                return _Attempt(error="connect_error", retryable=True)
            except httpx.TransportError:
                return _Attempt(error="network_error", retryable=True, bytes_downloaded=_downloaded(response))

    async def _read(
        self, response: httpx.Response, slot: HostSlot, accept: Accept | None, max_bytes: int, truncate: bool
    ) -> _Attempt:
        status, headers = response.status_code, response.headers
        if status == 429 or status >= 500:
            retry_after = parse_retry_after(headers.get("retry-after"))
            if retry_after is not None:
                slot.defer(min(retry_after, self.config.max_retry_after))
            return _Attempt(
                status, headers, retryable=True, retry_after=retry_after, bytes_downloaded=await _drain(response)
            )
        if status not in BODY_STATUSES:
            return _Attempt(status, headers, bytes_downloaded=await _drain(response))
        rejection = accept(headers) if accept else None
        if rejection:
            return _Attempt(status, headers, error=rejection)
        declared = headers.get("content-length", "")
        if not truncate and declared.isdigit() and int(declared) > max_bytes:
            return _Attempt(status, headers, error="too_large")
        try:
            body = await read_capped(response, max_bytes, truncate)
        except ContentCodingError as exc:
            return _Attempt(status, headers, error=exc.reason, bytes_downloaded=response.num_bytes_downloaded)
        if body is None:
            return _Attempt(status, headers, error="too_large", bytes_downloaded=response.num_bytes_downloaded)
        return _Attempt(status, headers, body=body, bytes_downloaded=response.num_bytes_downloaded)

    async def _check_host(self, host: str) -> None:
        """Resolve ``host`` (its ASCII form) once and apply the SSRF check to every address;
        the first is where :meth:`_pinned_address` then connects."""
        cached = self._addresses.get(host)
        if cached is None:
            try:
                ipaddress.ip_address(host)
                cached = [host]
            except ValueError:
                try:
                    cached = await asyncio.to_thread(self._resolver, host) or OSError(f"{host} has no address")
                except OSError as exc:
                    cached = exc
            self._addresses[host] = cached
        if isinstance(cached, OSError):
            raise cached
        if not self.allow_private_hosts:
            blocked = [address for address in cached if is_blocked_address(address)]
            if blocked:
                raise BlockedAddress(f"{host} resolves to non-public address {blocked[0]}")

    def _pinned_address(self, host: str) -> str:
        """The address checked for ``host`` by the request being sent."""
        addresses = self._addresses.get(host)
        if not isinstance(addresses, list):
            raise httpcore.ConnectError(f"{host} was not checked before connecting")
        return addresses[0]

    def _slot(self, origin: str) -> HostSlot:
        slot = self._slots.get(origin)
        if slot is None:
            slot = self._slots[origin] = HostSlot(asyncio.Semaphore(self._concurrency), self._delay)
        return slot


async def _drain(response: httpx.Response) -> int:
    """Read an unwanted body to its end when it is small, so closing the response keeps its
    connection; returns the bytes read. A body of unknown or large size is left unread, and a
    read that fails leaves the connection to be closed: the answer itself is already in."""
    declared = response.headers.get("content-length", "")
    small = declared.isdigit() and int(declared) <= MAX_DRAINED_BYTES
    if response.status_code in NO_BODY_STATUSES or small:
        try:
            async for _ in response.aiter_raw():
                pass
        except httpx.TransportError:
            pass
    return response.num_bytes_downloaded


def _downloaded(response: httpx.Response | None) -> int:
    return response.num_bytes_downloaded if response is not None else 0


def html_only(headers: httpx.Headers) -> str | None:
    """``accept`` for pages: only ``text/html`` and ``application/xhtml+xml``."""
    media_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    return None if media_type in ("text/html", "application/xhtml+xml") else "not_html"
