"""Sitemaps and sitemap indexes (sitemaps.org protocol), plain or gzip-compressed.

Bounded on every axis: at most ``max_sitemaps`` documents fetched, ``max_bytes`` per
document both downloaded and after decompression (decompressed incrementally, so a
zip bomb stops at the cap), ``max_urls`` page URLs collected. A child sitemap must be on
the same origin as the index that lists it (the protocol's rule), so an index cannot
send the crawler elsewhere; for the same reason a sitemap's redirects must stay on its
host (``redirect_off_host``; scheme and port may change, as from http to https). Each
hop also passes the fetcher's checks (valid URL, SSRF guard). Every failure is recorded
against the sitemap URL and the crawl goes on. XML is parsed without entity expansion
or network access.
"""

from __future__ import annotations

import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from lxml import etree

from pipeline.crawl.fetcher import CheckRedirect, Fetcher
from pipeline.crawl.urls import normalize_url, origin_of

MAX_SITEMAPS = 50
MAX_SITEMAP_BYTES = 10 * 1024 * 1024
_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 64 * 1024


class SitemapError(ValueError):
    """A sitemap document is unreadable or over a cap."""


@dataclass(frozen=True)
class SitemapDocument:
    kind: str  # "urlset" or "sitemapindex"
    locations: tuple[str, ...]  # <loc> values as written


@dataclass
class SitemapReport:
    urls: list[str] = field(default_factory=list)  # normalised page URLs, in order, unique
    fetched: list[str] = field(default_factory=list)  # sitemap URLs fetched
    errors: dict[str, str] = field(default_factory=dict)  # sitemap URL -> reason


def decompress(data: bytes, max_bytes: int = MAX_SITEMAP_BYTES) -> bytes:
    """``data`` itself, or its gunzipped content when it starts with the gzip magic."""
    if not data.startswith(_GZIP_MAGIC):
        return data
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    output = bytearray()
    pending = data
    try:
        while pending and not inflater.eof:
            output += inflater.decompress(pending, _CHUNK)
            if len(output) > max_bytes:
                raise SitemapError(f"decompresses to more than {max_bytes} bytes")
            pending = inflater.unconsumed_tail
        output += inflater.flush()
    except zlib.error as exc:
        raise SitemapError(f"bad gzip data: {exc}") from exc
    if not inflater.eof:
        raise SitemapError("bad gzip data: truncated")
    if len(output) > max_bytes:
        raise SitemapError(f"decompresses to more than {max_bytes} bytes")
    return bytes(output)


_XML_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False, recover=False)


def parse_sitemap(data: bytes) -> SitemapDocument:
    """The kind and ``<loc>`` entries of a sitemap or sitemap index, namespace-agnostic."""
    try:
        root = etree.fromstring(data, parser=_XML_PARSER)
    except etree.XMLSyntaxError as exc:
        raise SitemapError(f"not well-formed XML: {exc}") from exc
    kind = etree.QName(root).localname
    if kind not in ("urlset", "sitemapindex"):
        raise SitemapError(f"root element is <{kind}>, not <urlset> or <sitemapindex>")
    entry = "url" if kind == "urlset" else "sitemap"
    locations = []
    for element in root:
        if isinstance(element.tag, str) and etree.QName(element).localname == entry:
            for child in element:
                if isinstance(child.tag, str) and etree.QName(child).localname == "loc" and child.text:
                    locations.append(child.text.strip())
    return SitemapDocument(kind, tuple(locations))


async def collect_sitemap_urls(
    fetcher: Fetcher,
    sitemap_urls: list[str],
    *,
    keep: Callable[[str], bool],
    max_urls: int,
    max_sitemaps: int = MAX_SITEMAPS,
    max_bytes: int = MAX_SITEMAP_BYTES,
) -> SitemapReport:
    """Page URLs listed by ``sitemap_urls`` and the indexes among them, breadth first;
    only URLs ``keep`` accepts are collected (and counted against ``max_urls``)."""
    report = SitemapReport()
    queue = deque(dict.fromkeys(sitemap_urls))
    seen: set[str] = set(queue)
    found: dict[str, None] = {}
    while queue and len(report.fetched) < max_sitemaps and len(found) < max_urls:
        url = queue.popleft()
        report.fetched.append(url)
        result = await fetcher.fetch(url, max_bytes=max_bytes, check_redirect=_on_host_of(url))
        if result.error or result.status not in (200, 203) or result.body is None:
            report.errors[url] = result.error or f"http_{result.status}"
            continue
        try:
            document = parse_sitemap(decompress(result.body, max_bytes))
        except SitemapError as exc:
            report.errors[url] = str(exc)
            continue
        base = result.final_url
        for location in document.locations:
            target = normalize_url(location, base)
            if target is None:
                continue
            if document.kind == "urlset":
                if not keep(target):
                    continue
                found[target] = None
                if len(found) >= max_urls:
                    break
            elif target not in seen and origin_of(target) == origin_of(base):
                seen.add(target)
                queue.append(target)
    report.urls = list(found)
    return report


def _on_host_of(url: str) -> CheckRedirect:
    host = urlsplit(url).hostname

    async def check(target: str) -> str | None:
        return None if urlsplit(target).hostname == host else "redirect_off_host"

    return check
