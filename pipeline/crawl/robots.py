"""robots.txt per origin, parsed with protego.

Fetch outcomes follow Google's documented convention:

- 200: the rules apply (the first 500 KiB are parsed, the rest ignored);
- 4xx other than 429 (typically 404): no robots.txt, everything is allowed;
- 429, 5xx or a network failure: the site is treated as fully disallowed for this run
  (``unavailable``, with the reason), because the site may be struggling and its rules
  are unknown. The crawler reports such pages as ``failed`` (``robots_unavailable``),
  never as removed: a passing robots.txt outage must not delete stored pages;
- an address the SSRF guard refuses: ``blocked``; nothing is decided here, since every
  page fetch of that host is refused by the same guard and reported as such.

Redirects are followed (up to the fetcher's limit, across hosts as RFC 9309 allows),
each hop checked like a page's: a target that is not a valid http(s) URL ends the
fetch with ``bad_redirect``, an address the SSRF guard refuses with
``blocked_address``. Either makes the rules ``unavailable``: unlike a refused origin,
a refused hop leaves the origin's pages fetchable, but under rules nobody could read.
``Sitemap:`` lines that are not valid URLs are kept aside (:attr:`RobotsRules.bad_sitemaps`)
for the crawl to report.
"""

from __future__ import annotations

from dataclasses import dataclass

from protego import Protego

from pipeline.crawl.fetcher import Fetcher
from pipeline.crawl.urls import normalize_url

MAX_ROBOTS_BYTES = 500 * 1024
# A Crawl-delay above this is capped so one robots.txt cannot stall a run for hours;
# the cap is reported in the crawl stats.
MAX_CRAWL_DELAY = 30.0


@dataclass(frozen=True)
class RobotsRules:
    origin: str
    status: str  # "ok" (rules parsed), "missing" (4xx: allow all), "unavailable" (disallow all), "blocked"
    reason: str | None  # why unavailable/missing: "http_503", "timeout", ...
    user_agent: str
    parser: Protego | None = None

    def allows(self, url: str) -> bool:
        if self.status == "unavailable":
            return False
        return self.parser is None or self.parser.can_fetch(url, self.user_agent)

    @property
    def crawl_delay(self) -> float | None:
        delay = self.parser.crawl_delay(self.user_agent) if self.parser else None
        return None if delay is None else min(float(delay), MAX_CRAWL_DELAY)

    @property
    def sitemaps(self) -> tuple[str, ...]:
        """The ``Sitemap:`` URLs, normalised."""
        urls = (normalize_url(line, self.origin + "/") for line in self._sitemap_lines())
        return tuple(dict.fromkeys(url for url in urls if url))

    @property
    def bad_sitemaps(self) -> tuple[str, ...]:
        """The ``Sitemap:`` values that are not http(s) URLs the crawler can fetch."""
        return tuple(line for line in self._sitemap_lines() if normalize_url(line, self.origin + "/") is None)

    def _sitemap_lines(self) -> list[str]:
        return list(self.parser.sitemaps) if self.parser else []


async def fetch_robots(fetcher: Fetcher, origin: str, user_agent: str) -> RobotsRules:
    """The robots.txt rules of ``origin`` (``scheme://host[:port]``)."""
    result = await fetcher.fetch(f"{origin}/robots.txt", max_bytes=MAX_ROBOTS_BYTES, truncate=True)
    if result.error == "blocked_address" and not result.redirects:
        return RobotsRules(origin, "blocked", result.error, user_agent)
    if result.error:
        return RobotsRules(origin, "unavailable", result.error, user_agent)
    status = result.status or 0
    if status in (200, 203) and result.body is not None:
        text = result.body.decode("utf-8", errors="replace")
        return RobotsRules(origin, "ok", None, user_agent, Protego.parse(text))
    if 400 <= status < 500 and status != 429:
        return RobotsRules(origin, "missing", f"http_{status}", user_agent)
    return RobotsRules(origin, "unavailable", f"http_{status}", user_agent)
