"""The synthetic docs site of the scaling benchmark: the same seed serves the same bytes, every link and
sitemap entry leads to a page it serves, and the real crawler finds all of it, then revalidates it."""

from __future__ import annotations

import re
from xml.etree import ElementTree

from pipeline.crawl import KnownPage, Source, crawl
from pipeline.crawl.urls import extract_links
from tests.crawl.site_server import SiteServer
from tests.scale.site import SECTIONS, URLS_PER_SITEMAP, SyntheticDocsSite

BASE = "http://127.0.0.1:8000"
NAMESPACE = {"sitemap": "http://www.sitemaps.org/schemas/sitemap/0.9"}


def _body(site: SyntheticDocsSite, url: str) -> str:
    reply = site.reply(url.removeprefix(site.base))
    assert reply is not None, f"{url} is not served"
    return reply.payload().decode("utf-8")


def _locs(xml: str, tag: str) -> list[str]:
    return [
        element.text or "" for element in ElementTree.fromstring(xml).findall(f"sitemap:{tag}/sitemap:loc", NAMESPACE)
    ]


def test_the_same_seed_serves_the_same_bytes_and_another_seed_other_pages():
    first, again, other = (
        SyntheticDocsSite(500, 3, BASE),
        SyntheticDocsSite(500, 3, BASE),
        SyntheticDocsSite(500, 4, BASE),
    )
    for url in first.page_urls()[::37]:
        assert _body(first, url) == _body(again, url)
        assert first.reply(url.removeprefix(BASE)).headers == again.reply(url.removeprefix(BASE)).headers
    assert _body(first, BASE + "/sitemap.xml") == _body(again, BASE + "/sitemap.xml")
    assert _body(first, BASE + first.page_path(7)) != _body(other, BASE + other.page_path(7))


def test_pages_look_like_documentation():
    site = SyntheticDocsSite(200, 1, BASE)
    pages = [_body(site, BASE + site.page_path(number)) for number in range(200)]
    assert all("<h1>" in page and "<h2" in page and "<title>" in page for page in pages)
    assert sum("<h3" in page for page in pages) > 50
    assert sum("<pre><code>" in page for page in pages) > 50
    assert sum("<table>" in page for page in pages) > 20
    assert len({re.search(r"<title>(.*?)</title>", page)[1] for page in pages}) == 200


def test_every_link_and_sitemap_entry_leads_to_a_page_the_site_serves():
    site = SyntheticDocsSite(300, 5, BASE)
    urls = site.page_urls()
    assert len(urls) == 300 + 1 + len(SECTIONS) and len(set(urls)) == len(urls)
    linked = set()
    for url in urls:
        links = extract_links(_body(site, url), url).links
        assert links, f"{url} links nowhere"
        linked.update(links)
    assert linked <= set(urls)
    assert site.reply("/robots.txt").payload().decode().endswith(f"Sitemap: {BASE}/sitemap.xml\n")
    assert _locs(_body(site, BASE + "/sitemap.xml"), "url") == urls
    for path in ("/docs/nowhere.html", site.page_path(299).replace("299", "300"), "/docs/tutorial/x-0.html"):
        assert site.reply(path) is None


def test_a_site_larger_than_one_sitemap_file_has_a_sitemap_index():
    site = SyntheticDocsSite(URLS_PER_SITEMAP + 500, 2, BASE)
    parts = _locs(_body(site, BASE + "/sitemap.xml"), "sitemap")
    assert parts == [f"{BASE}/sitemaps/0.xml", f"{BASE}/sitemaps/1.xml"]
    listed = [url for part in parts for url in _locs(_body(site, part), "url")]
    assert listed == site.page_urls()
    assert site.reply("/sitemaps/2.xml") is None


def test_the_crawler_finds_every_page_then_revalidates_them_all():
    with SiteServer() as server:
        site = SyntheticDocsSite(60, 9, server.base)
        server.fallback = site.reply
        source = Source("synthetic", (site.start_url,), allow_private_hosts=True, max_pages=200)
        first = {result.url: result for result in crawl(source)}
        assert set(first) == set(site.page_urls()) and {r.outcome for r in first.values()} == {"new"}

        known = {url: KnownPage(url, r.etag, r.last_modified, r.content_hash, r.links) for url, r in first.items()}
        again = list(crawl(source, known))
        assert {result.outcome for result in again} == {"not_modified"} and len(again) == len(first)
