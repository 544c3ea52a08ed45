from __future__ import annotations

import gzip
from collections.abc import Iterator

import pytest

from pipeline.crawl import FetchConfig, PageResult, Source
from tests.crawl.site_server import Reply, SiteServer, repeated, sequence

# Tiny backoffs and deadlines keep retries and timeouts fast in tests.
FAST = FetchConfig(
    backoff_base=0.01,
    backoff_max=0.05,
    max_retries=3,
    connect_timeout=2,
    read_timeout=2,
    request_deadline=5,
    max_page_bytes=256 * 1024,
)

ACCENTED = "Résumé of the naïve café — “smart quotes”, déjà vu, 5 € only."
HUGE_CHUNK = b"<p>" + b"x" * (64 * 1024 - 7) + b"</p>\n"
HUGE_CHUNKS = 800  # 50 MiB if it were all sent


def html(title: str, *links: str, head: str = "", body: str = "") -> str:
    anchors = "".join(f'<li><a href="{href}">{href}</a></li>' for href in links)
    return (
        f"<!DOCTYPE html><html><head><title>{title}</title>{head}</head>"
        f"<body><h1>{title}</h1>{body}<ul>{anchors}</ul></body></html>"
    )


INDEX_LINKS = (
    "guide.html",
    "guide.html#install",
    "./api/../guide.html",
    "api/",
    "private/secret.html",
    "agent-blocked.html",
    "old.html",
    "loop-a.html",
    "huge.html",
    "latin1.html",
    "utf8-meta-latin1.html",
    "flaky-500.html",
    "broken.html",
    "manual.pdf",
    "data.json",
    "print/guide.html",
    "missing.html",
    "removed.html",
    "http://other.example/page.html",
    "/blog/post.html",
    "mailto:docs@example.com",
    "javascript:void(0)",
    "deep/1.html",
)


def build_docs_site(site: SiteServer, *, crawl_delay: float = 0.0) -> None:
    """A small documentation site exercising every crawler feature under /docs/."""
    base = site.base
    robots = "\n".join(
        [
            "User-agent: *",
            "Disallow: /docs/private/",
            "",
            "User-agent: docs-to-answer-pipeline",
            "Disallow: /docs/private/",
            "Disallow: /docs/agent-blocked.html",
            *([f"Crawl-delay: {crawl_delay}"] if crawl_delay else []),
            "",
            f"Sitemap: {base}/sitemap_index.xml",
        ]
    )
    site.routes["/robots.txt"] = Reply(body=robots, content_type="text/plain")
    site.routes["/sitemap_index.xml"] = Reply(
        body=(
            '<?xml version="1.0" encoding="UTF-8"?>'
            '<sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
            f"<sitemap><loc>{base}/sitemaps/docs.xml.gz</loc></sitemap>"
            f"<sitemap><loc>{base}/sitemaps/missing.xml</loc></sitemap>"
            "<sitemap><loc>http://other.example/sitemap.xml</loc></sitemap>"
            "</sitemapindex>"
        ),
        content_type="application/xml",
    )
    urlset = (
        '<?xml version="1.0" encoding="UTF-8"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
        + "".join(
            f"<url><loc>{loc}</loc></url>"
            for loc in (
                f"{base}/docs/orphan.html",
                f"{base}/docs/guide.html",
                "http://other.example/x.html",
                f"{base}/blog/post.html",
            )
        )
        + "</urlset>"
    )
    site.routes["/sitemaps/docs.xml.gz"] = Reply(body=gzip.compress(urlset.encode()), content_type="application/gzip")

    site.page(
        "/docs/index.html", html("Docs home", *INDEX_LINKS, body='<a rel="nofollow" href="nofollowed.html">x</a>')
    )
    site.page(
        "/docs/guide.html",
        html("Guide", "api/function.html", body="<p>Install it.</p>"),
        headers={"ETag": '"guide-v1"', "Last-Modified": "Mon, 03 Nov 2025 10:00:00 GMT"},
    )
    site.page("/docs/api/", html("API", "../guide.html", "function.html"))
    site.page("/docs/api/function.html", html("function()", body="<p>Calls things.</p>"))
    site.page("/docs/orphan.html", html("Only in the sitemap"))
    site.page("/docs/private/secret.html", html("Secret"))
    site.page("/docs/agent-blocked.html", html("Not for our agent"))
    site.page("/docs/nofollowed.html", html("Nofollowed"))
    site.page("/blog/post.html", html("Blog"))
    site.routes["/docs/old.html"] = Reply(301, headers={"Location": "/docs/older.html"})
    site.routes["/docs/older.html"] = Reply(301, headers={"Location": f"{base}/docs/moved.html"})
    site.page("/docs/moved.html", html("Moved here"))
    site.routes["/docs/loop-a.html"] = Reply(302, headers={"Location": "loop-b.html"})
    site.routes["/docs/loop-b.html"] = Reply(302, headers={"Location": "loop-a.html"})
    site.routes["/docs/huge.html"] = Reply(stream=repeated(HUGE_CHUNK, HUGE_CHUNKS))
    # Header says UTF-8, bytes are windows-1252.
    site.routes["/docs/latin1.html"] = Reply(body=html("Latin", body=f"<p>{ACCENTED}</p>").encode("cp1252"))
    # Meta says ISO-8859-1, bytes are UTF-8.
    site.routes["/docs/utf8-meta-latin1.html"] = Reply(
        body=html("UTF-8 really", head='<meta charset="iso-8859-1">', body=f"<p>{ACCENTED}</p>").encode("utf-8"),
        content_type="text/html",
    )
    site.routes["/docs/flaky-500.html"] = sequence(Reply(500), Reply(500), Reply(body=html("Flaky 500")))
    site.routes["/docs/broken.html"] = Reply(500, "<html>oops</html>")
    site.routes["/docs/manual.pdf"] = Reply(body=b"%PDF-1.4\n%...", content_type="application/pdf")
    site.routes["/docs/data.json"] = Reply(body='{"a": 1}', content_type="application/json")
    site.page("/docs/print/guide.html", html("Guide (print)", head='<link rel="canonical" href="../guide.html">'))
    site.routes["/docs/removed.html"] = Reply(410, "<html>gone</html>")
    for level in range(1, 9):
        site.page(f"/docs/deep/{level}.html", html(f"Level {level}", f"{level + 1}.html"))


def docs_source(site: SiteServer, **overrides: object) -> Source:
    fields: dict[str, object] = dict(
        name="testdocs", start_urls=(site.url("/docs/index.html"),), allow_private_hosts=True
    )
    fields.update(overrides)
    return Source(**fields)  # type: ignore[arg-type]


def by_url(results: list[PageResult]) -> dict[str, PageResult]:
    keyed: dict[str, PageResult] = {}
    for result in results:
        assert result.url not in keyed, f"two results for {result.url}: {keyed[result.url]} and {result}"
        keyed[result.url] = result
    return keyed


@pytest.fixture
def site() -> Iterator[SiteServer]:
    with SiteServer() as server:
        yield server


@pytest.fixture
def docs_site(site: SiteServer) -> SiteServer:
    build_docs_site(site)
    return site
