"""Temporary redirects of known pages keep them; permanent ones, and temporary ones past the grace period, do not."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pipeline.crawl import KnownPage, crawl
from tests.crawl.conftest import FAST, by_url, docs_source, html
from tests.crawl.site_server import Reply, SiteServer

MAINTENANCE = "/docs/maintenance.html"


def known(site: SiteServer, *paths: str, redirected_since: datetime | None = None) -> dict[str, KnownPage]:
    return {site.url(p): KnownPage(site.url(p), '"v1"', None, "h", (), redirected_since) for p in paths}


def test_a_maintenance_night_of_302_303_and_307_keeps_every_known_page_and_stores_no_maintenance_page(
    site: SiteServer,
) -> None:
    site.page(MAINTENANCE, html("Down for maintenance"))
    pages = {"/docs/index.html": 302, "/docs/a.html": 303, "/docs/b.html": 307}
    for path, status in pages.items():
        site.routes[path] = Reply(status, headers={"Location": MAINTENANCE, "ETag": '"maintenance"'})
    results = by_url(list(crawl(docs_source(site, discover_sitemaps=False), known(site, *pages), fetch_config=FAST)))
    assert {url.removeprefix(site.base): (r.outcome, r.reason) for url, r in results.items()} == {
        path: ("temporarily_redirected", f"http_{status}") for path, status in pages.items()
    }
    # The redirect is not followed, and the known page's validators are not replaced by the redirect's.
    assert site.count(MAINTENANCE) == 0
    assert all(r.etag is None and r.html is None for r in results.values())


def test_permanent_redirects_and_temporary_ones_past_the_grace_period_remove_the_page(site: SiteServer) -> None:
    site.page("/docs/index.html", html("Home"))
    site.page("/docs/new.html", html("New home"))
    site.page(MAINTENANCE, html("Down for maintenance"))
    site.routes["/docs/moved-301.html"] = Reply(301, headers={"Location": "/docs/new.html"})
    site.routes["/docs/moved-308.html"] = Reply(308, headers={"Location": "/docs/new.html"})
    site.routes["/docs/away.html"] = Reply(302, headers={"Location": MAINTENANCE})
    site.routes["/docs/briefly.html"] = Reply(302, headers={"Location": MAINTENANCE})
    now = datetime.now(UTC)
    pages = {
        **known(site, "/docs/moved-301.html", "/docs/moved-308.html"),
        **known(site, "/docs/away.html", redirected_since=now - timedelta(days=8)),
        **known(site, "/docs/briefly.html", redirected_since=now - timedelta(days=6)),
    }
    source = docs_source(site, discover_sitemaps=False, max_depth=0)
    results = by_url(list(crawl(source, pages, fetch_config=FAST, temporary_redirect_grace=timedelta(days=7))))
    outcomes = {url.removeprefix(site.base): (r.outcome, r.reason) for url, r in results.items()}
    assert outcomes["/docs/moved-301.html"] == outcomes["/docs/moved-308.html"] == ("removed", "redirected")
    assert outcomes["/docs/away.html"] == ("removed", "redirected")
    assert outcomes["/docs/briefly.html"] == ("temporarily_redirected", "http_302")
    # The page that moved for good is recorded where it went; the maintenance page behind the expired redirect too.
    assert outcomes["/docs/new.html"] == outcomes[MAINTENANCE] == ("new", None)


def test_a_new_url_answering_a_temporary_redirect_is_still_followed(site: SiteServer) -> None:
    site.routes["/docs/index.html"] = Reply(302, headers={"Location": "/docs/latest/index.html"})
    site.page("/docs/latest/index.html", html("Latest"))
    results = by_url(list(crawl(docs_source(site, discover_sitemaps=False), fetch_config=FAST)))
    assert results[site.url("/docs/latest/index.html")].outcome == "new"
