"""The public entry point, :func:`crawl`.

``crawl(source, known)`` returns a :class:`Crawl`: an iterator of :class:`PageResult`
fed by an asyncio loop on a background thread through a bounded hand-over (at most
``max_queue`` results wait for the consumer, so memory stays bounded and each result
can be persisted as it arrives; :mod:`pipeline.crawl.loop_thread`). ``Crawl.stats`` holds
the :class:`CrawlStats` once the iterator is exhausted. ``close()`` (or leaving
``with crawl(...) as run:``) cancels the crawl and joins its thread.

The crawl rules (scheduling, robots.txt, sitemaps, redirects, canonicals, the outcome of a
failed fetch) are with the frontier, in :mod:`pipeline.crawl.frontier`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import timedelta
from ssl import SSLContext
from typing import Any

import httpcore

from pipeline.crawl.fetcher import DEFAULT_USER_AGENT, FetchConfig, Resolver
from pipeline.crawl.frontier import DEFAULT_TEMPORARY_REDIRECT_GRACE, Frontier
from pipeline.crawl.loop_thread import Finished, LoopThread
from pipeline.crawl.results import OUTCOMES, CrawlStats, KnownPage, PageResult
from pipeline.crawl.sources import Source

__all__ = [
    "DEFAULT_TEMPORARY_REDIRECT_GRACE",
    "DEFAULT_USER_AGENT",
    "OUTCOMES",
    "Crawl",
    "CrawlStats",
    "KnownPage",
    "PageResult",
    "crawl",
]

_JOIN_TIMEOUT = 30.0


def crawl(
    source: Source,
    known: Mapping[str, KnownPage] | None = None,
    *,
    user_agent: str = DEFAULT_USER_AGENT,
    resolver: Resolver | None = None,
    network_backend: httpcore.AsyncNetworkBackend | None = None,
    ssl_context: SSLContext | None = None,
    max_queue: int = 64,
    fetch_config: FetchConfig | None = None,
    temporary_redirect_grace: timedelta = DEFAULT_TEMPORARY_REDIRECT_GRACE,
) -> Crawl:
    """Crawl ``source``; iterate the returned :class:`Crawl` for results, then read
    ``.stats``. ``known`` maps URL -> what the state store has for it; ``resolver``,
    ``network_backend`` and ``ssl_context`` go to the :class:`Fetcher`."""
    return Crawl(
        source,
        known or {},
        user_agent=user_agent,
        max_queue=max_queue,
        fetch_config=fetch_config,
        network=dict(resolver=resolver, network_backend=network_backend, ssl_context=ssl_context),
        temporary_redirect_grace=temporary_redirect_grace,
    )


class Crawl(Iterator[PageResult]):
    """A running crawl: an iterator of results with final :attr:`stats`."""

    def __init__(
        self,
        source: Source,
        known: Mapping[str, KnownPage],
        *,
        user_agent: str,
        max_queue: int,
        fetch_config: FetchConfig | None,
        network: Mapping[str, Any],
        temporary_redirect_grace: timedelta,
    ) -> None:
        if max_queue < 1:
            raise ValueError(f"max_queue must be >= 1, got {max_queue}")
        self.source = source
        self.stats = CrawlStats(source=source.name)
        frontier = Frontier(
            source,
            known,
            self.stats,
            user_agent=user_agent,
            fetch_config=fetch_config,
            max_queue=max_queue,
            network=network,
            temporary_redirect_grace=temporary_redirect_grace,
        )
        self._runner = LoopThread(frontier, name=f"crawl-{source.name}")
        self._started = False
        self._done = False

    def __iter__(self) -> Crawl:
        return self

    def __next__(self) -> PageResult:
        if self._done:
            raise StopIteration
        if not self._started:
            self._started = True
            self._runner.start()
        item = self._runner.handover.get()
        if isinstance(item, Finished):
            self._done = True
            self._runner.thread.join(_JOIN_TIMEOUT)
            if item.error is not None:
                raise RuntimeError(f"crawl of source {self.source.name!r} failed: {item.error!r}") from item.error
            raise StopIteration
        self._runner.call(self._runner.frontier.room.release)
        return item

    def close(self) -> None:
        """Stop the crawl (if running) and wait for its thread to end."""
        if self._done:
            return
        self._done = True
        if self._started:
            self.stats.cancelled = self._runner.thread.is_alive()
            self._runner.cancel()
            self._runner.thread.join(_JOIN_TIMEOUT)

    def __enter__(self) -> Crawl:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        # An abandoned crawl stops too: the thread holds no reference back to this object.
        self.close()
