"""End-to-end crawls of the loopback documentation site."""

from __future__ import annotations

import gc
import threading
import time
from dataclasses import replace
from itertools import pairwise

from pipeline.crawl import CrawlStats, KnownPage, PageResult, Source, crawl
from tests.crawl.conftest import ACCENTED, FAST, HUGE_CHUNK, HUGE_CHUNKS, build_docs_site, by_url, docs_source, html
from tests.crawl.site_server import Reply, SiteServer, sequence


def run(
    source: Source, known: dict[str, KnownPage] | None = None, **kwargs: object
) -> tuple[dict[str, PageResult], CrawlStats]:
    crawler = crawl(source, known, fetch_config=kwargs.pop("fetch_config", FAST), **kwargs)
    results = by_url(list(crawler))
    return results, crawler.stats


def known_from(results: dict[str, PageResult]) -> dict[str, KnownPage]:
    """What a state store would remember after persisting ``results``."""
    return {
        url: KnownPage(url, r.etag, r.last_modified, r.content_hash, r.links)
        for url, r in results.items()
        if r.outcome in ("new", "changed", "unchanged", "not_modified")
    }


def test_full_crawl_reports_every_page_once_with_its_outcome(docs_site: SiteServer) -> None:
    results, stats = run(docs_source(docs_site))
    u = docs_site.url

    outcomes = {url.removeprefix(docs_site.base): (r.outcome, r.reason) for url, r in results.items()}
    assert outcomes == {
        "/docs/index.html": ("new", None),
        "/docs/guide.html": ("new", None),
        "/docs/api/": ("new", None),
        "/docs/api/function.html": ("new", None),
        "/docs/orphan.html": ("new", None),  # only listed in the gzip sitemap behind the index
        "/docs/moved.html": ("new", None),  # old.html -> older.html -> moved.html
        "/docs/latin1.html": ("new", None),
        "/docs/utf8-meta-latin1.html": ("new", None),
        "/docs/flaky-500.html": ("new", None),
        "/docs/private/secret.html": ("skipped", "robots_disallowed"),
        "/docs/agent-blocked.html": ("skipped", "robots_disallowed"),
        "/docs/loop-a.html": ("skipped", "redirect_loop"),
        "/docs/huge.html": ("skipped", "too_large"),
        "/docs/broken.html": ("failed", "http_500"),
        "/docs/manual.pdf": ("skipped", "not_html"),
        "/docs/data.json": ("skipped", "not_html"),
        "/docs/print/guide.html": ("skipped", "canonical_elsewhere"),
        "/docs/missing.html": ("gone", "http_404"),
        "/docs/removed.html": ("gone", "http_410"),
        **{f"/docs/deep/{level}.html": ("new", None) for level in range(1, 6)},  # max_depth 5
    }
    # Fragments and dot segments collapse to one URL fetched once.
    assert docs_site.count("/docs/guide.html") == 1
    # Never requested: robots-disallowed, nofollow, out of prefix, beyond max_depth.
    never = {
        "/docs/private/secret.html",
        "/docs/agent-blocked.html",
        "/docs/nofollowed.html",
        "/blog/post.html",
        "/docs/deep/6.html",
    }
    assert not never & docs_site.paths()
    assert all(seen.headers["host"] == f"127.0.0.1:{docs_site.port}" for seen in docs_site.log)
    assert all(seen.headers["user-agent"].startswith("docs-to-answer-pipeline/") for seen in docs_site.log)

    moved = results[u("/docs/moved.html")]
    assert moved.final_url == u("/docs/moved.html") and moved.status == 200
    assert docs_site.count("/docs/old.html") == docs_site.count("/docs/older.html") == 1
    assert docs_site.count("/docs/flaky-500.html") == 3
    assert docs_site.count("/docs/broken.html") == FAST.max_retries + 1
    # The PDF's body was never downloaded.
    assert results[u("/docs/manual.pdf")].bytes_downloaded == 0

    for result in results.values():
        assert (result.html is not None) == (result.outcome in ("new", "changed"))
        if result.html is not None:
            assert result.content_hash and len(result.content_hash) == 64
            assert result.fetched_at is not None and result.fetched_at.tzinfo is not None
    guide = results[u("/docs/guide.html")]
    assert guide.etag == '"guide-v1"' and guide.last_modified == "Mon, 03 Nov 2025 10:00:00 GMT"
    assert results[u("/docs/deep/5.html")].depth == 5

    assert stats.outcomes["new"] == 14 and stats.reasons["robots_disallowed"] == 2
    assert stats.robots == {docs_site.base: "ok"}
    assert stats.sitemaps_fetched == 3  # index, gzip urlset, missing child; the other host's is ignored
    assert stats.sitemap_errors == {u("/sitemaps/missing.xml"): "http_404"}
    assert stats.sitemap_urls == 2  # orphan.html and guide.html; other host and /blog/ are out of scope
    assert stats.bytes_downloaded >= sum(r.bytes_downloaded for r in results.values())
    assert not stats.max_pages_reached and not stats.cancelled


def test_lying_charsets_decode_without_mojibake(docs_site: SiteServer) -> None:
    results, _ = run(docs_source(docs_site, max_depth=1))
    for path in ("/docs/latin1.html", "/docs/utf8-meta-latin1.html"):
        text = results[docs_site.url(path)].html
        assert ACCENTED in text, text
        assert "Ã" not in text and "\ufffd" not in text


def test_huge_streamed_page_is_abandoned_at_the_cap(docs_site: SiteServer) -> None:
    results, _ = run(docs_source(docs_site, max_depth=1))
    huge = results[docs_site.url("/docs/huge.html")]
    assert huge.outcome == "skipped" and huge.reason == "too_large"
    assert FAST.max_page_bytes < huge.bytes_downloaded <= FAST.max_page_bytes + 2 * len(HUGE_CHUNK)
    [seen] = docs_site.requests_for("/docs/huge.html")
    deadline = time.monotonic() + 5
    while not seen.done and time.monotonic() < deadline:
        time.sleep(0.05)
    assert seen.done and not seen.completed and seen.sent < HUGE_CHUNKS * len(HUGE_CHUNK) // 2


def test_declared_content_length_over_the_cap_downloads_nothing(site: SiteServer) -> None:
    site.page("/docs/index.html", html("Home", "big.html"))
    site.page("/docs/big.html", "<html>" + "y" * (FAST.max_page_bytes + 1) + "</html>")
    results, _ = run(docs_source(site))
    big = results[site.url("/docs/big.html")]
    assert (big.outcome, big.reason, big.bytes_downloaded) == ("skipped", "too_large", 0)


def test_recrawl_is_incremental(docs_site: SiteServer) -> None:
    u = docs_site.url
    first, _ = run(docs_source(docs_site))
    known = known_from(first)
    known[u("/docs/old.html")] = KnownPage(u("/docs/old.html"), None, None, "stale")  # stored before it moved

    docs_site.page("/docs/api/", html("API v2", "../guide.html", "function.html", "new-page.html"))
    docs_site.page("/docs/api/new-page.html", html("Brand new"))
    del docs_site.routes["/docs/orphan.html"]  # now 404
    docs_site.routes["/docs/utf8-meta-latin1.html"] = Reply(410)
    log_start = len(docs_site.log)

    second, stats = run(docs_source(docs_site), known)
    outcome = {url.removeprefix(docs_site.base): r.outcome for url, r in second.items()}
    assert outcome["/docs/guide.html"] == "not_modified"
    assert outcome["/docs/index.html"] == "unchanged"
    assert outcome["/docs/api/function.html"] == "unchanged"
    assert outcome["/docs/api/"] == "changed"
    assert outcome["/docs/api/new-page.html"] == "new"
    assert outcome["/docs/orphan.html"] == "gone"
    assert outcome["/docs/utf8-meta-latin1.html"] == "gone"
    assert (outcome["/docs/old.html"], second[u("/docs/old.html")].reason) == ("removed", "redirected")
    assert outcome["/docs/moved.html"] == "unchanged"

    guide = second[u("/docs/guide.html")]
    assert guide.html is None and guide.bytes_downloaded == 0 and guide.status == 304
    assert guide.etag == '"guide-v1"' and guide.content_hash == first[u("/docs/guide.html")].content_hash
    [guide_request] = [s for s in docs_site.log[log_start:] if s.path == "/docs/guide.html"]
    assert guide_request.headers["if-none-match"] == '"guide-v1"'
    assert guide_request.headers["if-modified-since"] == "Mon, 03 Nov 2025 10:00:00 GMT"
    assert guide_request.status == 304 and guide_request.sent == 0
    assert second[u("/docs/api/")].html.count("API v2") == 2  # title and h1
    assert stats.outcomes["not_modified"] == 1


def test_links_of_a_page_answering_304_are_still_followed(site: SiteServer) -> None:
    # function.html failed last run, so it is not stored; the page linking to it is unchanged since.
    site.page("/docs/index.html", html("Docs home", "function.html"), headers={"ETag": '"index-v1"'})
    site.routes["/docs/function.html"] = sequence(Reply(503), Reply(body=html("function()")))
    source = docs_source(site, discover_sitemaps=False)
    fetch_config = replace(FAST, max_retries=0)
    first, _ = run(source, fetch_config=fetch_config)
    assert first[site.url("/docs/index.html")].links == (site.url("/docs/function.html"),)
    assert first[site.url("/docs/function.html")].outcome == "failed"

    second, _ = run(source, known_from(first), fetch_config=fetch_config)
    assert second[site.url("/docs/index.html")].outcome == "not_modified"
    assert second[site.url("/docs/function.html")].outcome == "new"


def test_revalidation_keeps_connections_alive(site: SiteServer) -> None:
    # A 304 has no body; closing it unread would close its connection, one new connection per page.
    pages = [f"p{i}.html" for i in range(40)]
    site.page("/docs/index.html", html("Home", *pages), headers={"ETag": '"home"'})
    for page in pages:
        site.page(f"/docs/{page}", html(page), headers={"ETag": f'"{page}"'})
    site.routes["/docs/missing.html"] = Reply(404, "<html>not here</html>")
    first, _ = run(docs_source(site))
    log_start = len(site.log)

    second, _ = run(docs_source(site), {**known_from(first), site.url("/docs/missing.html"): KnownPage("x")})
    revalidations = site.log[log_start:]
    assert {r.outcome for url, r in second.items() if url != site.url("/docs/missing.html")} == {"not_modified"}
    assert second[site.url("/docs/missing.html")].outcome == "gone"
    assert sum(seen.status == 304 for seen in revalidations) == 41
    # robots.txt, sitemap.xml, 41 304s and a 404 over at most one connection per worker.
    assert len({seen.client_port for seen in revalidations}) <= docs_source(site).max_concurrency_per_host


def test_known_pages_out_of_scope_or_disallowed_are_removed_without_a_request(docs_site: SiteServer) -> None:
    u = docs_site.url
    known = {
        url: KnownPage(url, None, None, "h")
        for url in (
            u("/docs/guide.html"),
            u("/docs/api/function.html"),
            u("/docs/private/secret.html"),
            u("/elsewhere/x.html"),
        )
    }
    results, _ = run(docs_source(docs_site, exclude=(r"/api/",), max_depth=0), known)
    assert (results[u("/docs/api/function.html")].outcome, results[u("/docs/api/function.html")].reason) == (
        "removed",
        "out_of_scope",
    )
    assert results[u("/elsewhere/x.html")].reason == "out_of_scope"
    assert (results[u("/docs/private/secret.html")].outcome, results[u("/docs/private/secret.html")].reason) == (
        "removed",
        "robots_disallowed",
    )
    assert results[u("/docs/guide.html")].outcome == "changed"  # still verified though not linked at depth 0
    assert not {"/docs/api/function.html", "/elsewhere/x.html", "/docs/private/secret.html"} & docs_site.paths()


def test_transient_failures_of_known_pages_are_failed_never_gone(site: SiteServer) -> None:
    u = site.url
    site.page("/docs/index.html", html("Home", "a.html", "b.html", "slow.html"))
    site.routes["/docs/a.html"] = Reply(503, headers={"Retry-After": "0"})
    site.routes["/docs/b.html"] = Reply(403)
    site.routes["/docs/slow.html"] = Reply(body=html("slow"), delay=1.5)
    known = {
        url: KnownPage(url, None, None, "h") for url in (u("/docs/a.html"), u("/docs/b.html"), u("/docs/slow.html"))
    }
    config = replace(FAST, read_timeout=0.3, max_retries=1)
    results, _ = run(docs_source(site), known, fetch_config=config)
    assert (results[u("/docs/a.html")].outcome, results[u("/docs/a.html")].reason) == ("failed", "http_503")
    assert site.count("/docs/a.html") == 2
    assert (results[u("/docs/b.html")].outcome, results[u("/docs/b.html")].reason) == ("failed", "http_403")
    assert (results[u("/docs/slow.html")].outcome, results[u("/docs/slow.html")].reason) == ("failed", "timeout")


def test_unreachable_host_fails_known_pages(site: SiteServer) -> None:
    with SiteServer() as doomed:
        dead_base = doomed.base
    # The port is closed now: connecting is refused.
    dead = f"{dead_base}/docs/index.html"
    results, stats = run(docs_source(site, start_urls=(dead,)), {dead: KnownPage(dead, None, None, "h")})
    assert (results[dead].outcome, results[dead].reason) == ("failed", "robots_unavailable")
    assert stats.robots == {dead_base: "unavailable (connect_error)"}


def test_robots_server_error_fails_pages_instead_of_removing_them(site: SiteServer) -> None:
    site.routes["/robots.txt"] = Reply(503)
    site.page("/docs/index.html", html("Home"))
    start = site.url("/docs/index.html")
    results, stats = run(docs_source(site), {start: KnownPage(start, None, None, "h")})
    assert (results[start].outcome, results[start].reason) == ("failed", "robots_unavailable")
    assert site.count("/docs/index.html") == 0
    assert stats.robots == {site.base: "unavailable (http_503)"}


def test_bad_sitemap_urls_and_redirects_are_reported_and_the_crawl_goes_on(site: SiteServer) -> None:
    site.routes["/robots.txt"] = Reply(
        body="\n".join(
            [
                "User-agent: *",
                "Sitemap: http://0177.0.0.1/sitemap.xml",
                f"Sitemap: {site.base}/to-bad-host.xml",
                f"Sitemap: {site.base}/to-other-host.xml",
                f"Sitemap: {site.base}/sitemap.xml",
            ]
        ),
        content_type="text/plain",
    )
    site.routes["/to-bad-host.xml"] = Reply(302, headers={"Location": "http://xn--/sitemap.xml"})
    site.routes["/to-other-host.xml"] = Reply(302, headers={"Location": f"http://localhost:{site.port}/sitemap.xml"})
    site.routes["/sitemap.xml"] = Reply(
        body=f"<urlset><url><loc>{site.url('/docs/orphan.html')}</loc></url></urlset>", content_type="application/xml"
    )
    site.page("/docs/index.html", html("Home"))
    site.page("/docs/orphan.html", html("Only in the sitemap"))
    results, stats = run(docs_source(site))
    assert {url: r.outcome for url, r in results.items()} == {
        site.url("/docs/index.html"): "new",
        site.url("/docs/orphan.html"): "new",
    }
    assert stats.sitemap_errors == {
        "http://0177.0.0.1/sitemap.xml": "bad_url",
        site.url("/to-bad-host.xml"): "bad_redirect",
        site.url("/to-other-host.xml"): "redirect_off_host",
    }
    assert [seen.headers["host"] for seen in site.requests_for("/sitemap.xml")] == [f"127.0.0.1:{site.port}"]


def test_robots_redirect_to_an_invalid_url_fails_the_pages_of_that_origin_only(site: SiteServer) -> None:
    site.routes["/robots.txt"] = Reply(301, headers={"Location": "http://xn--/robots.txt"})
    site.page("/docs/index.html", html("Home"))
    start = site.url("/docs/index.html")
    results, stats = run(docs_source(site), {start: KnownPage(start, None, None, "h")})
    assert (results[start].outcome, results[start].reason) == ("failed", "robots_unavailable")
    assert stats.robots == {site.base: "unavailable (bad_redirect)"}


def test_a_page_labelled_with_a_codec_that_is_no_charset_is_decoded_by_detection(site: SiteServer) -> None:
    site.routes["/docs/index.html"] = Reply(
        body=html("Odd label", head='<meta charset="base64">', body=f"<p>{ACCENTED}</p>").encode("cp1252"),
        content_type="text/html",
    )
    results, _ = run(docs_source(site))
    page = results[site.url("/docs/index.html")]
    assert page.outcome == "new" and ACCENTED in page.html


def test_missing_robots_allows_everything(site: SiteServer) -> None:
    site.page("/docs/index.html", html("Home", "private/x.html"))
    site.page("/docs/private/x.html", html("x"))
    results, stats = run(docs_source(site))
    assert {r.outcome for r in results.values()} == {"new"} and len(results) == 2
    assert stats.robots == {site.base: "missing (http_404)"}


def test_retry_after_is_honoured(site: SiteServer) -> None:
    site.page("/docs/index.html", html("Home", "limited.html"))
    site.routes["/docs/limited.html"] = sequence(Reply(429, headers={"Retry-After": "1"}), Reply(body=html("ok")))
    results, stats = run(docs_source(site))
    assert results[site.url("/docs/limited.html")].outcome == "new"
    first, second = site.requests_for("/docs/limited.html")
    assert second.at - first.at >= 0.95
    assert stats.requests == 5  # robots, sitemap.xml, index, limited twice


def test_crawl_delay_spaces_requests_to_the_host(site: SiteServer) -> None:
    build_docs_site(site, crawl_delay=0.2)
    results, stats = run(
        docs_source(
            site,
            max_depth=0,
            discover_sitemaps=False,
            start_urls=(site.url("/docs/index.html"), site.url("/docs/guide.html"), site.url("/docs/api/")),
        )
    )
    assert stats.crawl_delays == {site.base: 0.2}
    starts = sorted(seen.at for seen in site.log if seen.path != "/robots.txt")
    assert len(starts) == 3
    assert all(later - earlier >= 0.18 for earlier, later in pairwise(starts))


def test_max_pages_bounds_the_crawl(site: SiteServer) -> None:
    site.page("/docs/index.html", html("Home", *(f"p{i}.html" for i in range(50))))
    for i in range(50):
        site.page(f"/docs/p{i}.html", html(f"P{i}"))
    results, stats = run(docs_source(site, max_pages=10))
    assert len(results) == 10 and stats.max_pages_reached
    assert len([p for p in site.paths() if p.startswith("/docs/")]) == 10


def test_max_depth_zero_fetches_only_the_start(docs_site: SiteServer) -> None:
    results, _ = run(docs_source(docs_site, max_depth=0, discover_sitemaps=False))
    assert list(results) == [docs_site.url("/docs/index.html")]


def test_canonical_cycle_keeps_one_page(site: SiteServer) -> None:
    site.page("/docs/index.html", html("Home", "a.html"))
    site.page("/docs/a.html", html("A", head='<link rel="canonical" href="b.html">'))
    site.page("/docs/b.html", html("B", head='<link rel="canonical" href="a.html">'))
    results, _ = run(docs_source(site))
    assert results[site.url("/docs/a.html")].reason == "canonical_elsewhere"
    assert results[site.url("/docs/b.html")].outcome == "new"


def test_known_page_with_canonical_elsewhere_is_removed(site: SiteServer) -> None:
    site.page("/docs/index.html", html("Home", "print.html"))
    site.page("/docs/print.html", html("Print", head='<link rel="canonical" href="/docs/index.html">'))
    printed = site.url("/docs/print.html")
    results, _ = run(docs_source(site), {printed: KnownPage(printed, None, None, "h")})
    assert (results[printed].outcome, results[printed].reason) == ("removed", "canonical_elsewhere")
    assert results[printed].final_url == site.url("/docs/index.html")
    assert results[site.url("/docs/index.html")].outcome == "new"


def test_redirect_out_of_scope_is_not_followed(site: SiteServer) -> None:
    site.page("/docs/index.html", html("Home", "away.html"))
    site.routes["/docs/away.html"] = Reply(302, headers={"Location": "/blog/post.html"})
    site.page("/blog/post.html", html("Blog"))
    results, _ = run(docs_source(site))
    away = results[site.url("/docs/away.html")]
    assert (away.outcome, away.reason, away.final_url) == (
        "skipped",
        "redirect_out_of_scope",
        site.url("/blog/post.html"),
    )
    assert site.count("/blog/post.html") == 0


def test_too_many_redirects(site: SiteServer) -> None:
    site.page("/docs/index.html", html("Home", "r0.html"))
    for hop in range(10):
        site.routes[f"/docs/r{hop}.html"] = Reply(301, headers={"Location": f"r{hop + 1}.html"})
    results, _ = run(docs_source(site))
    assert results[site.url("/docs/r0.html")].reason == "too_many_redirects"
    assert site.count("/docs/r6.html") == 0 and site.count("/docs/r5.html") == 1


def test_closing_early_cancels_the_crawl_and_its_thread(site: SiteServer) -> None:
    site.page("/docs/index.html", html("Home", *(f"p{i}.html" for i in range(300))))
    for i in range(300):
        site.page(f"/docs/p{i}.html", html(f"P{i}"), delay=0.01)
    threads_before = threading.active_count()
    crawler = crawl(docs_source(site), fetch_config=FAST, max_queue=2)
    taken = [next(crawler) for _ in range(3)]
    crawler.close()
    assert len(taken) == 3 and crawler.stats.cancelled
    assert not any(t.name == "crawl-testdocs" for t in threading.enumerate())
    requests_at_close = len(site.log)
    time.sleep(0.3)
    # Requests already on the wire at close may still reach the server's log (a loaded machine
    # starts its handlers late): at most one per connection the source allows to the host.
    settled = len(site.log)
    assert settled <= requests_at_close + docs_source(site).max_concurrency_per_host
    assert settled < 20  # bounded hand-over: the crawl did not run ahead
    time.sleep(0.3)
    assert len(site.log) == settled  # and nothing is sent after that: the crawl is over
    assert list(crawler) == []
    assert threading.active_count() <= threads_before + 1  # at most a server handler finishing


def test_known_pages_refused_for_passing_reasons_fail_instead_of_going(docs_site: SiteServer) -> None:
    loop = docs_site.url("/docs/loop-a.html")
    # Permanent redirects: a temporary one of a known page is not followed at all (test_temporary_redirects).
    for here, there in (("loop-a", "loop-b"), ("loop-b", "loop-a")):
        docs_site.routes[f"/docs/{here}.html"] = Reply(301, headers={"Location": f"{there}.html"})
    results, _ = run(
        docs_source(docs_site, max_depth=0, discover_sitemaps=False), {loop: KnownPage(loop, None, None, "h")}
    )
    assert (results[loop].outcome, results[loop].reason) == ("failed", "redirect_loop")


def test_breaking_out_of_a_for_loop_stops_the_crawl(site: SiteServer) -> None:
    site.page("/docs/index.html", html("Home", *(f"p{i}.html" for i in range(300))))
    for i in range(300):
        site.page(f"/docs/p{i}.html", html(f"P{i}"), delay=0.01)
    for result in crawl(docs_source(site), fetch_config=FAST, max_queue=2):
        if result.url.endswith("/p0.html"):
            break
    gc.collect()
    deadline = time.monotonic() + 5
    while any(t.name == "crawl-testdocs" for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not any(t.name == "crawl-testdocs" for t in threading.enumerate())
    assert len(site.log) < 30
