"""The frontier: the crawl itself (scheduling, robots, sitemaps, redirects, canonicals, outcomes),
run on the event loop thread of :mod:`pipeline.crawl.loop_thread`.

Frontier rules:

- Breadth first from the start URLs, the in-scope sitemap URLs and every known URL
  (all at depth 0; known pages are re-verified each run so a vanished page shows up as
  ``gone`` and a page no longer linked but still served is kept). Links are followed
  up to ``max_depth`` hops, within ``Source.in_scope``; ``rel=nofollow`` links and
  pages with robots ``nofollow`` meta are not followed.
- ``max_pages`` bounds the URLs scheduled per run. Known URLs are always re-verified,
  even beyond it, so lowering the limit never deletes stored pages by itself.
- Each scheduled URL yields one result; a redirect or canonical may add one more.
- Redirects: the page is recorded under the final URL when every hop is in scope,
  allowed by robots and not already scheduled; a known URL that now redirects is
  reported ``removed`` (reason ``redirected``). A redirect to an already scheduled URL
  ends there (that URL is crawled on its own), one out of scope ends with
  ``redirect_out_of_scope``.
- Temporary redirects (302, 303, 307) of a known URL are not followed: the page is
  reported ``temporarily_redirected`` and kept as stored (a maintenance page, a login wall
  for a night). Once it has answered so for longer than ``temporary_redirect_grace`` (the
  state store remembers since when), its redirect is followed like a permanent one (301,
  308), and it is ``removed``.
- ``<link rel="canonical">`` to a different in-scope URL: the page is not recorded under
  its own URL (``removed``/``skipped`` with ``canonical_elsewhere``) and the canonical
  URL is scheduled instead, at the same depth. A canonical out of scope is ignored, as
  is a canonical pointing back to a page that itself deferred to this one.
- A known URL out of scope is ``removed`` without a request; one disallowed by robots
  likewise (robots.txt is fetched first). When robots.txt itself is unavailable (5xx,
  429, network) every page of that host is ``failed`` with ``robots_unavailable``.
- Outcome of a failed fetch: reasons that say something definite about the page
  (``not_html``, ``too_large``, ``redirected``, ...) remove a known page and skip a new
  one; refused addresses and redirect loops skip a new URL but only fail a known one
  (they may be passing misconfiguration); everything transient fails. ``failed`` never
  asks the caller to delete anything.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import queue
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from pipeline.crawl.encoding import DecodeError, decode_html
from pipeline.crawl.fetcher import FetchConfig, Fetcher, FetchResult, html_only
from pipeline.crawl.results import CrawlStats, KnownPage, PageResult
from pipeline.crawl.robots import RobotsRules, fetch_robots
from pipeline.crawl.sitemap import collect_sitemap_urls
from pipeline.crawl.sources import Source
from pipeline.crawl.urls import extract_links, normalize_url, origin_of

log = logging.getLogger(__name__)

TEMPORARY_REDIRECTS = frozenset({302, 303, 307})
DEFAULT_TEMPORARY_REDIRECT_GRACE = timedelta(days=7)
# Reasons that describe the page itself: a known page goes, a new one is skipped.
_DEFINITE = frozenset(
    {
        "not_html",
        "too_large",
        "redirected",
        "redirect_out_of_scope",
        "robots_disallowed",
        "canonical_elsewhere",
        "bad_redirect",
    }
)
# Reasons that skip a new URL but only fail a known one.
_REFUSED = frozenset({"blocked_address", "redirect_loop", "too_many_redirects"})
_MAX_WORKERS = 64


@dataclass(frozen=True)
class _Task:
    url: str
    depth: int


class Frontier:
    """The crawl itself, on the event loop thread."""

    def __init__(
        self,
        source: Source,
        known: Mapping[str, KnownPage],
        stats: CrawlStats,
        *,
        user_agent: str,
        fetch_config: FetchConfig | None,
        max_queue: int,
        network: Mapping[str, Any],
        temporary_redirect_grace: timedelta,
    ) -> None:
        self.source = source
        self.known = {normalize_url(url) or url: page for url, page in known.items()}
        self.stats = stats
        self.user_agent = user_agent
        self.max_queue = max_queue
        self.temporary_redirect_grace = temporary_redirect_grace
        self._fetcher_args = dict(
            network,
            user_agent=user_agent,
            config=fetch_config,
            allow_private_hosts=source.allow_private_hosts,
            max_concurrency_per_host=source.max_concurrency_per_host,
            delay_seconds=source.delay_seconds,
        )
        self.seen: set[str] = set()
        self.scheduled = 0
        self.deferred_to_canonical: set[str] = set()
        self.robots: dict[str, asyncio.Future[RobotsRules]] = {}

    def bind(self, handover: queue.SimpleQueue[Any]) -> None:
        """Create the loop-bound primitives (called on the loop thread)."""
        self.handover = handover
        self.room = asyncio.Semaphore(self.max_queue)
        self.queue: asyncio.Queue[_Task] = asyncio.Queue()

    async def run(self) -> None:
        async with Fetcher(**self._fetcher_args) as fetcher:
            self.fetcher = fetcher
            try:
                await self._seed()
                await self._drain()
            finally:
                self.stats.requests = fetcher.requests
                self.stats.bytes_downloaded = fetcher.bytes_downloaded

    async def _drain(self) -> None:
        origins = {origin_of(prefix) for prefix in self.source.allowed_prefixes}
        count = min(_MAX_WORKERS, self.source.max_concurrency_per_host * len(origins))
        workers = [asyncio.create_task(self._worker()) for _ in range(count)]
        try:
            await self.queue.join()
        finally:
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)

    async def _seed(self) -> None:
        for url in self.source.start_urls:
            self._schedule(url, 0)
        for url in self.known:
            if not self.source.in_scope(url):
                self.seen.add(url)
                await self._emit(PageResult(url, "removed", "out_of_scope"))
            else:
                self._schedule(url, 0, always=True)
        for url in await self._sitemap_urls():
            self._schedule(url, 0)

    async def _sitemap_urls(self) -> list[str]:
        sitemaps = list(self.source.sitemap_urls)
        if self.source.discover_sitemaps:
            for origin in dict.fromkeys(origin_of(url) for url in self.source.start_urls):
                rules = await self._robots(origin)
                self.stats.sitemap_errors.update(dict.fromkeys(rules.bad_sitemaps, "bad_url"))
                fallback = f"{origin}/sitemap.xml"
                sitemaps += rules.sitemaps or ([fallback] if rules.allows(fallback) else [])
        if not sitemaps:
            return []
        report = await collect_sitemap_urls(
            self.fetcher, list(dict.fromkeys(sitemaps)), keep=self.source.in_scope, max_urls=self.source.max_pages
        )
        self.stats.sitemaps_fetched = len(report.fetched)
        self.stats.sitemap_urls = len(report.urls)
        self.stats.sitemap_errors.update(report.errors)
        return report.urls

    def _schedule(self, url: str, depth: int, *, always: bool = False) -> bool:
        if url in self.seen:
            return False
        if not always and self.scheduled >= self.source.max_pages:
            self.stats.max_pages_reached = True
            return False
        self.seen.add(url)
        self.scheduled += 1
        self.queue.put_nowait(_Task(url, depth))
        return True

    async def _robots(self, origin: str) -> RobotsRules:
        future = self.robots.get(origin)
        if future is None:
            future = self.robots[origin] = asyncio.ensure_future(self._load_robots(origin))
        return await asyncio.shield(future)

    async def _load_robots(self, origin: str) -> RobotsRules:
        rules = await fetch_robots(self.fetcher, origin, self.user_agent)
        self.stats.robots[origin] = rules.status + (f" ({rules.reason})" if rules.reason else "")
        delay = rules.crawl_delay
        if delay:
            self.fetcher.raise_host_delay(origin, delay)
            self.stats.crawl_delays[origin] = delay
        return rules

    async def _worker(self) -> None:
        while True:
            task = await self.queue.get()
            try:
                await self._visit(task)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # one bad page never fails the crawl
                log.exception("crawling %s failed", task.url)
                await self._emit(
                    PageResult(task.url, "failed", f"internal_error:{type(exc).__name__}", depth=task.depth)
                )
            finally:
                self.queue.task_done()

    async def _visit(self, task: _Task) -> None:
        url, depth = task.url, task.depth
        known = self.known.get(url)
        refusal = _robots_refusal(await self._robots(origin_of(url)), url)
        if refusal:
            await self._emit(PageResult(url, _failure_outcome(refusal, known), refusal, depth=depth))
            return
        self.stats.pages_fetched += 1
        held = TEMPORARY_REDIRECTS if known and not self._redirected_too_long(known) else frozenset()
        fetched = await self.fetcher.fetch(
            url, accept=html_only, headers_for=self._validators, check_redirect=self._check_hop, not_followed=held
        )
        base = PageResult(
            url,
            "failed",
            final_url=fetched.final_url,
            status=fetched.status,
            content_type=fetched.headers.get("content-type"),
            fetched_at=datetime.now(UTC),
            etag=fetched.headers.get("etag"),
            last_modified=fetched.headers.get("last-modified"),
            bytes_downloaded=fetched.bytes_downloaded,
            depth=depth,
        )
        if fetched.status in held and not fetched.error:
            # Away for now (a maintenance page, a login wall): the stored page stands, validators and all.
            await self._emit(
                replace(
                    base,
                    outcome="temporarily_redirected",
                    reason=f"http_{fetched.status}",
                    etag=None,
                    last_modified=None,
                )
            )
            return
        if fetched.error:
            await self._emit(replace(base, outcome=_failure_outcome(fetched.error, known), reason=fetched.error))
            return
        if fetched.redirects:
            if known:
                await self._emit(replace(base, outcome="removed", reason="redirected", bytes_downloaded=0))
            key = fetched.final_url
            base = replace(base, url=key)
            known = self.known.get(key)
        await self._record(base, fetched, known)

    async def _record(self, base: PageResult, fetched: FetchResult, known: KnownPage | None) -> None:
        status = fetched.status
        if status == 304 and known:
            self._follow(known.links, base.depth)
            await self._emit(
                replace(
                    base,
                    outcome="not_modified",
                    etag=base.etag or known.etag,
                    last_modified=base.last_modified or known.last_modified,
                    content_hash=known.content_hash,
                )
            )
            return
        if status in (404, 410):
            await self._emit(replace(base, outcome="gone", reason=f"http_{status}"))
            return
        if fetched.body is None:
            await self._emit(replace(base, outcome="failed", reason=f"http_{status}"))
            return
        try:
            html, _charset = decode_html(fetched.body, base.content_type)
        except DecodeError:
            outcome = "failed" if known else "skipped"
            await self._emit(replace(base, outcome=outcome, reason="decode_error"))
            return
        links = extract_links(html, base.url)
        followable = () if links.nofollow else tuple(links.links)
        self._follow(followable, base.depth)
        base = replace(base, links=followable)
        if self._defers_to_canonical(base.url, links.canonical, base.depth):
            outcome = "removed" if known else "skipped"
            await self._emit(replace(base, outcome=outcome, reason="canonical_elsewhere", final_url=links.canonical))
            return
        digest = hashlib.sha256(html.encode("utf-8")).hexdigest()
        if known and known.content_hash == digest:
            await self._emit(replace(base, outcome="unchanged", content_hash=digest))
        else:
            await self._emit(replace(base, outcome="changed" if known else "new", html=html, content_hash=digest))

    def _follow(self, links: tuple[str, ...], depth: int) -> None:
        if depth < self.source.max_depth:
            for link in links:
                if self.source.in_scope(link):
                    self._schedule(link, depth + 1)

    def _defers_to_canonical(self, url: str, canonical: str | None, depth: int) -> bool:
        if canonical is None or canonical == url or not self.source.in_scope(canonical):
            return False
        if canonical in self.deferred_to_canonical:  # A -> B -> A: keep B
            return False
        if canonical not in self.seen and not self._schedule(canonical, depth):
            return False  # no budget for the canonical: keep the page under its own URL
        self.deferred_to_canonical.add(url)
        return True

    def _redirected_too_long(self, known: KnownPage) -> bool:
        since = known.redirected_since
        return since is not None and datetime.now(UTC) - since >= self.temporary_redirect_grace

    def _validators(self, url: str) -> dict[str, str]:
        known = self.known.get(url)
        headers = {}
        if known and known.etag:
            headers["If-None-Match"] = known.etag
        if known and known.last_modified:
            headers["If-Modified-Since"] = known.last_modified
        return headers

    async def _check_hop(self, target: str) -> str | None:
        if not self.source.in_scope(target):
            return "redirect_out_of_scope"
        if target in self.seen:
            return "redirected"
        refusal = _robots_refusal(await self._robots(origin_of(target)), target)
        if refusal:
            return refusal
        if target in self.seen:  # claimed by another worker while robots.txt loaded
            return "redirected"
        self.seen.add(target)
        return None

    async def _emit(self, result: PageResult) -> None:
        await self.room.acquire()
        self.stats.outcomes[result.outcome] += 1
        if result.reason:
            self.stats.reasons[result.reason] += 1
        self.handover.put(result)


def _robots_refusal(rules: RobotsRules, url: str) -> str | None:
    if rules.allows(url):
        return None
    return "robots_unavailable" if rules.status == "unavailable" else "robots_disallowed"


def _failure_outcome(reason: str, known: KnownPage | None) -> str:
    if reason in _DEFINITE:
        return "removed" if known else "skipped"
    if reason in _REFUSED and not known:
        return "skipped"
    return "failed"
