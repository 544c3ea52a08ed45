"""Crawler library: fetches a documentation source and yields one result per page.

No Dagster, no database: the caller passes what it already knows about the source's
pages and persists each :class:`PageResult` as it arrives.
"""

from pipeline.crawl.crawler import Crawl, crawl
from pipeline.crawl.fetcher import DEFAULT_USER_AGENT, FetchConfig
from pipeline.crawl.results import OUTCOMES, CrawlStats, KnownPage, PageResult
from pipeline.crawl.sources import Source, SourceConfigError, load_sources

__all__ = [
    "DEFAULT_USER_AGENT",
    "OUTCOMES",
    "Crawl",
    "CrawlStats",
    "FetchConfig",
    "KnownPage",
    "PageResult",
    "Source",
    "SourceConfigError",
    "crawl",
    "load_sources",
]
