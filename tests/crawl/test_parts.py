"""Sitemaps, robots.txt, charsets and fetcher details, against the loopback server."""

from __future__ import annotations

import asyncio
import gzip
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime

import pytest

from pipeline.crawl.encoding import decode_html
from pipeline.crawl.fetcher import FetchConfig, Fetcher, parse_retry_after
from pipeline.crawl.robots import MAX_CRAWL_DELAY, fetch_robots
from pipeline.crawl.sitemap import SitemapError, collect_sitemap_urls, decompress, parse_sitemap
from tests.crawl.conftest import ACCENTED, FAST
from tests.crawl.site_server import Reply, SiteServer, sequence

UA = "docs-to-answer-pipeline/0.1 (+test)"


def fetcher(**kwargs: object) -> Fetcher:
    return Fetcher(user_agent=UA, config=FAST, allow_private_hosts=True, **kwargs)  # type: ignore[arg-type]


# -- sitemaps ---------------------------------------------------------------------------


def urlset(*locs: str) -> bytes:
    entries = "".join(f"<url><loc> {loc} </loc><lastmod>2025-01-01</lastmod></url>" for loc in locs)
    return f'<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">{entries}</urlset>'.encode()


def test_parse_sitemap_and_index_namespace_agnostic() -> None:
    assert parse_sitemap(urlset("http://h.test/a", "http://h.test/b")).locations == (
        "http://h.test/a",
        "http://h.test/b",
    )
    index = parse_sitemap(b"<sitemapindex><sitemap><loc>http://h.test/s1.xml</loc></sitemap></sitemapindex>")
    assert (index.kind, index.locations) == ("sitemapindex", ("http://h.test/s1.xml",))
    with pytest.raises(SitemapError, match="root element is <html>"):
        parse_sitemap(b"<html><body>not a sitemap</body></html>")
    with pytest.raises(SitemapError, match="not well-formed"):
        parse_sitemap(b"<urlset><url>")


def test_sitemap_entities_are_not_expanded() -> None:
    xxe = (
        b'<?xml version="1.0"?><!DOCTYPE urlset [<!ENTITY secret SYSTEM "file:///etc/hostname">]>'
        b"<urlset><url><loc>http://h.test/&secret;</loc></url></urlset>"
    )
    assert parse_sitemap(xxe).locations in ((), ("http://h.test/",))


def test_gzip_bomb_stops_at_the_cap() -> None:
    bomb = gzip.compress(b"\0" * (20 * 1024 * 1024))
    assert len(bomb) < 100_000
    with pytest.raises(SitemapError, match="more than 1048576 bytes"):
        decompress(bomb, max_bytes=1024 * 1024)
    assert decompress(gzip.compress(b"<urlset/>")) == b"<urlset/>"
    assert decompress(b"<urlset/>") == b"<urlset/>"
    with pytest.raises(SitemapError, match="bad gzip"):
        decompress(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(SitemapError, match="truncated"):
        decompress(gzip.compress(b"<urlset>" * 1000)[:-30])


def test_collect_sitemaps_bounds_documents_and_urls(site: SiteServer) -> None:
    # An index listing 5 child sitemaps of 10 URLs each, one of them itself an index (cycle).
    children = "".join(f"<sitemap><loc>{site.url(f'/s{i}.xml.gz')}</loc></sitemap>" for i in range(5))
    site.routes["/index.xml"] = Reply(
        body=f"<sitemapindex>{children}<sitemap><loc>{site.url('/index.xml')}</loc>"
        f"</sitemap><sitemap><loc>http://evil.test/s.xml</loc></sitemap></sitemapindex>"
    )
    for i in range(5):
        locs = [site.url(f"/docs/p{i}-{j}.html") for j in range(10)] + [site.url(f"/blog/b{i}.html")]
        site.routes[f"/s{i}.xml.gz"] = Reply(body=gzip.compress(urlset(*locs)), content_type="application/gzip")

    async def collect(**limits: int):
        async with fetcher() as f:
            return await collect_sitemap_urls(f, [site.url("/index.xml")], keep=lambda u: "/docs/" in u, **limits)

    everything = asyncio.run(collect(max_urls=1000))
    assert len(everything.urls) == 50 and all("/docs/" in u for u in everything.urls)
    assert everything.fetched == [site.url("/index.xml")] + [site.url(f"/s{i}.xml.gz") for i in range(5)]
    assert asyncio.run(collect(max_urls=15)).urls[-1] == site.url("/docs/p1-4.html")
    assert len(asyncio.run(collect(max_urls=1000, max_sitemaps=3)).fetched) == 3
    small = asyncio.run(collect(max_urls=1000, max_bytes=200))
    assert small.urls == [] and set(small.errors.values()) == {"too_large"}


# -- robots.txt -------------------------------------------------------------------------


def robots_for(site: SiteServer, reply: Reply):
    site.routes["/robots.txt"] = reply

    async def load():
        async with fetcher() as f:
            return await fetch_robots(f, site.base, UA)

    return asyncio.run(load())


def test_robots_groups_delay_and_sitemaps(site: SiteServer) -> None:
    rules = robots_for(
        site,
        Reply(
            body="User-agent: *\nDisallow: /\n\nUser-agent: docs-to-answer-pipeline\n"
            "Allow: /docs/\nDisallow: /docs/drafts/\nCrawl-delay: 2.5\n"
            "Sitemap: /sitemap-docs.xml\n",
            content_type="text/plain",
        ),
    )
    assert rules.status == "ok"
    assert rules.allows(site.url("/docs/a.html"))
    assert not rules.allows(site.url("/docs/drafts/a.html"))
    assert rules.allows(site.url("/blog/"))  # the * group's "Disallow: /" is not for an agent with its own group
    assert rules.crawl_delay == 2.5
    assert rules.sitemaps == (site.url("/sitemap-docs.xml"),)


def test_robots_crawl_delay_is_capped(site: SiteServer) -> None:
    rules = robots_for(site, Reply(body="User-agent: *\nCrawl-delay: 86400\n", content_type="text/plain"))
    assert rules.crawl_delay == MAX_CRAWL_DELAY


@pytest.mark.parametrize(
    ("reply", "status", "allowed"),
    [
        (Reply(404), "missing", True),
        (Reply(403), "missing", True),
        (Reply(503), "unavailable", False),
        (Reply(429), "unavailable", False),
    ],
)
def test_robots_fetch_failures(site: SiteServer, reply: Reply, status: str, allowed: bool) -> None:
    rules = robots_for(site, reply)
    assert rules.status == status and rules.reason == f"http_{reply.status}"
    assert rules.allows(site.url("/docs/x.html")) is allowed


def test_robots_redirect_is_followed(site: SiteServer) -> None:
    site.routes["/real-robots.txt"] = Reply(body="User-agent: *\nDisallow: /x/\n", content_type="text/plain")
    rules = robots_for(site, Reply(301, headers={"Location": "/real-robots.txt"}))
    assert rules.status == "ok" and not rules.allows(site.url("/x/y"))


# -- charsets ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type", "charset"),
    [
        (f"<p>{ACCENTED}</p>".encode("cp1252"), "text/html; charset=utf-8", "cp1252"),
        (f'<meta charset="iso-8859-1"><p>{ACCENTED}</p>'.encode(), "text/html", "utf-8"),
        (
            f'<meta http-equiv="Content-Type" content="text/html; charset=windows-1252"><p>{ACCENTED}</p>'.encode(
                "cp1252"
            ),
            "text/html; charset=utf-8",
            "cp1252",
        ),
        (f"<p>{ACCENTED}</p>".encode("utf-8-sig"), "text/html; charset=iso-8859-1", "utf-8-sig"),
        (f"<p>{ACCENTED}</p>".encode("utf-16"), None, "utf-16"),
        (f"<p>{ACCENTED}</p>".encode("utf-16-le"), "text/html; charset=UTF-16LE", "utf-16-le"),
    ],
)
def test_decode_html_believes_evidence_not_labels(body: bytes, content_type: str | None, charset: str) -> None:
    text, used = decode_html(body, content_type)
    assert ACCENTED in text and used == charset


@pytest.mark.parametrize("label", ["base64", "rot13", "hex", "zlib", "unicode_escape", "no-such-charset"])
def test_labels_that_are_not_web_charsets_fall_back_to_detection(label: str) -> None:
    body = f'<meta charset="{label}"><p>{ACCENTED}</p>'.encode("cp1252")
    text, used = decode_html(body, f"text/html; charset={label}")
    assert ACCENTED in text and used == "cp1252"


def test_decode_html_detects_an_undeclared_non_western_charset() -> None:
    russian = "<p>Документация по базе данных: установка, настройка и резервное копирование.</p>"
    text, used = decode_html(russian.encode("cp1251"), "text/html; charset=utf-8")
    assert text == russian and used == "cp1251"


# -- fetcher ----------------------------------------------------------------------------


def test_parse_retry_after() -> None:
    now = datetime(2025, 11, 3, 10, 0, 0, tzinfo=UTC)
    assert parse_retry_after("120", now) == 120
    assert parse_retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True), now) == 30
    assert parse_retry_after(format_datetime(now - timedelta(seconds=30), usegmt=True), now) == 0
    assert parse_retry_after("soon", now) is None and parse_retry_after(None) is None


def test_retry_after_beyond_the_cap_is_not_waited_for(site: SiteServer) -> None:
    site.routes["/busy"] = Reply(503, headers={"Retry-After": "3600"})

    async def fetch():
        async with fetcher() as f:
            return await f.fetch(site.url("/busy"))

    result = asyncio.run(fetch())
    assert result.status == 503 and site.count("/busy") == 1


def test_retry_after_http_date_is_honoured(site: SiteServer) -> None:
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=2), usegmt=True)
    site.routes["/later"] = sequence(Reply(503, headers={"Retry-After": later}), Reply(body="ok"))

    async def fetch():
        async with fetcher() as f:
            return await f.fetch(site.url("/later"))

    assert asyncio.run(fetch()).body == b"ok"
    _, second = site.requests_for("/later")
    # The retry may not come before the date the server named (whole seconds): compare on the wall clock.
    # How long after the 503 that is depends on when the date was written, so the gap itself is not asserted.
    wall_clock_offset = time.time() - time.monotonic()
    assert second.at + wall_clock_offset >= parsedate_to_datetime(later).timestamp() - 0.05


def test_per_host_concurrency_is_bounded(site: SiteServer) -> None:
    for i in range(8):
        site.routes[f"/slow{i}"] = Reply(body="x", delay=0.2)

    async def fetch_all():
        async with Fetcher(config=FAST, allow_private_hosts=True, max_concurrency_per_host=2) as f:
            await asyncio.gather(*(f.fetch(site.url(f"/slow{i}")) for i in range(8)))

    asyncio.run(fetch_all())
    starts = sorted(seen.at for seen in site.log)
    # 8 requests two at a time: four waves of 0.2 s.
    assert starts[-1] - starts[0] >= 0.55
    assert all(starts[i + 2] - starts[i] >= 0.18 for i in range(6))


def test_redirect_hops_are_checked_by_the_caller(site: SiteServer) -> None:
    site.routes["/a"] = Reply(302, headers={"Location": "/b"})
    site.routes["/b"] = Reply(302, headers={"Location": "/c"})
    site.routes["/c"] = Reply(body="c")
    hops: list[str] = []

    async def check(url: str) -> str | None:
        hops.append(url)
        return "stop_here" if url.endswith("/c") else None

    async def fetch():
        async with fetcher() as f:
            return await f.fetch(site.url("/a"), check_redirect=check)

    result = asyncio.run(fetch())
    assert hops == [site.url("/b"), site.url("/c")]
    assert (result.error, result.final_url, result.redirects) == ("stop_here", site.url("/c"), (site.url("/b"),))
    assert site.count("/c") == 0


@pytest.mark.parametrize("location", ["http://0177.0.0.1/x", "http://xn--/x", "http://[::1/x"])
def test_a_location_the_client_cannot_parse_ends_the_fetch_as_bad_redirect(site: SiteServer, location: str) -> None:
    site.routes["/moved"] = Reply(302, headers={"Location": location})

    async def fetch():
        async with fetcher() as f:
            return await f.fetch(site.url("/moved"))

    result = asyncio.run(fetch())
    assert (result.status, result.error, result.final_url) == (302, "bad_redirect", site.url("/moved"))
    assert site.count("/moved") == 1  # definite: not retried as a network failure


def test_config_max_redirects_is_respected(site: SiteServer) -> None:
    site.routes["/r1"] = Reply(302, headers={"Location": "/r2"})
    site.routes["/r2"] = Reply(body="end")

    async def fetch(limit: int):
        async with Fetcher(config=FetchConfig(max_redirects=limit), allow_private_hosts=True) as f:
            return await f.fetch(site.url("/r1"))

    assert asyncio.run(fetch(0)).error == "too_many_redirects"
    assert asyncio.run(fetch(1)).body == b"end"
