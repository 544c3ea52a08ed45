"""What a crawl is given and what it reports: a :class:`KnownPage` per URL the state store has,
a :class:`PageResult` per page, and :class:`CrawlStats` once it ends."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

OUTCOMES = (
    "new",
    "changed",
    "unchanged",
    "not_modified",
    "temporarily_redirected",
    "gone",
    "removed",
    "failed",
    "skipped",
)


@dataclass(frozen=True)
class KnownPage:
    """What the state store remembers about a URL of this source."""

    url: str
    etag: str | None = None
    last_modified: str | None = None
    content_hash: str | None = None
    # The links to follow that its last full fetch found; followed again when it answers 304.
    links: tuple[str, ...] = ()
    # Since when it answers a temporary redirect, if it does.
    redirected_since: datetime | None = None


@dataclass(frozen=True)
class PageResult:
    url: str  # normalised URL (the key)
    outcome: str  # one of OUTCOMES
    reason: str | None = None  # for failed/skipped/removed/gone: "timeout", "http_500", "not_html", ...
    final_url: str | None = None
    status: int | None = None
    content_type: str | None = None
    fetched_at: datetime | None = None  # UTC
    html: str | None = None  # decoded text, only for new/changed
    content_hash: str | None = None  # sha256 hex of the decoded text (UTF-8)
    etag: str | None = None
    last_modified: str | None = None
    bytes_downloaded: int = 0
    depth: int = 0
    links: tuple[str, ...] = ()  # links to follow (none under robots nofollow), when the body was parsed


@dataclass
class CrawlStats:
    source: str
    outcomes: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)  # over failed/skipped/removed/gone
    requests: int = 0  # HTTP requests sent, retries and redirect hops included
    pages_fetched: int = 0  # page URLs fetched (robots.txt and sitemaps excluded)
    bytes_downloaded: int = 0  # body bytes over the wire, everything included
    robots: dict[str, str] = field(default_factory=dict)  # origin -> "ok" | "missing (http_404)" | "unavailable (...)"
    crawl_delays: dict[str, float] = field(default_factory=dict)  # origin -> seconds (capped)
    sitemaps_fetched: int = 0
    sitemap_urls: int = 0  # in-scope page URLs the sitemaps listed
    sitemap_errors: dict[str, str] = field(default_factory=dict)
    max_pages_reached: bool = False
    cancelled: bool = False
