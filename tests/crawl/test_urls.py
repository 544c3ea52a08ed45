from __future__ import annotations

import pytest

from pipeline.crawl.urls import directory_of, extract_links, normalize_url, origin_of, remove_dot_segments


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("HTTP://Docs.Example.COM:80/a/./b/../c?x=1&a=2#frag", "http://docs.example.com/a/c?x=1&a=2"),
        ("https://example.com:443", "https://example.com/"),
        ("https://example.com:8443/x", "https://example.com:8443/x"),
        ("http://example.com/a b/%7e%2f?q=a b", "http://example.com/a%20b/~%2F?q=a%20b"),
        ("http://example.com/%zz", "http://example.com/%25zz"),
        ("http://user:secret@example.com/p", "http://example.com/p"),
        ("http://bücher.de/straße", "http://xn--bcher-kva.de/stra%C3%9Fe"),
        ("http://[::FFFF:127.0.0.1]:8080/", "http://[::ffff:7f00:1]:8080/"),
        ("  http://example.com/a\n/b\t ", "http://example.com/a/b"),
        ("http://example.com/dir/", "http://example.com/dir/"),
        ("http://example.com/dir/index.html", "http://example.com/dir/index.html"),
        ("http://example.com/p?", "http://example.com/p"),
    ],
)
def test_normalize_url(url: str, expected: str) -> None:
    assert normalize_url(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "mailto:a@b.c",
        "javascript:void(0)",
        "data:text/html,hi",
        "ftp://x/",
        "http://",
        "http://example.com:99999/",
        "/relative/without/base",
    ],
)
def test_non_http_urls_are_rejected(url: str) -> None:
    assert normalize_url(url) is None


@pytest.mark.parametrize(
    "url",
    [
        "http://0177.0.0.1/sitemap.xml",  # octal 127.0.0.1 to resolvers and browsers
        "http://0x7f.1/",
        "http://2130706433/",
        "http://10.1/",
        "http://bücher.123/",
        "http://xn--/",
        "http://xn--a.example/",  # malformed punycode
    ],
)
def test_hosts_the_http_client_cannot_address_are_rejected(url: str) -> None:
    assert normalize_url(url) is None


def test_relative_references_resolve_against_the_base() -> None:
    base = "http://h.test/docs/a/page.html?x=1#top"
    assert normalize_url("../b/./c.html", base) == "http://h.test/docs/b/c.html"
    assert normalize_url("?q=2", base) == "http://h.test/docs/a/page.html?q=2"
    assert normalize_url("#section", base) == "http://h.test/docs/a/page.html?x=1"
    assert normalize_url("//other.test/x", base) == "http://other.test/x"
    assert normalize_url("/../../x", base) == "http://h.test/x"


def test_remove_dot_segments_follows_rfc_3986_examples() -> None:
    assert remove_dot_segments("/a/b/c/./../../g") == "/a/g"
    assert remove_dot_segments("mid/content=5/../6") == "mid/6"
    assert remove_dot_segments("/a/b/..") == "/a/"
    assert remove_dot_segments("/a/.") == "/a/"


def test_origin_and_directory() -> None:
    assert origin_of("https://h.test:8443/a/b.html?x") == "https://h.test:8443"
    assert directory_of("http://h.test/docs/a.html?x=1") == "http://h.test/docs/"
    assert directory_of("http://h.test/docs") == "http://h.test/"


PAGE = """<!DOCTYPE html><html><head>
<base href="/docs/v2/"><link rel="canonical" href="intro.html"><link rel="stylesheet" href="style.css">
</head><body>
<a href="a.html">a</a> <a href="a.html#part">a again</a> <a href="../v1/b.html">b</a>
<a href="mailto:x@y.z">mail</a> <a href="javascript:go()">js</a> <a href="data:text/html,x">data</a>
<a rel="nofollow noopener" href="sponsored.html">nofollow</a> <a>no href</a> <a href="">empty</a>
<map><area href="area.html"></map> <a href="https://other.test/ext.html">ext</a>
</body></html>"""


def test_extract_links_honours_base_nofollow_and_skips_non_http() -> None:
    links = extract_links(PAGE, "http://h.test/docs/v2/intro.html?print=1")
    assert links.links == (
        "http://h.test/docs/v2/a.html",
        "http://h.test/docs/v1/b.html",
        "http://h.test/docs/v2/area.html",
        "https://other.test/ext.html",
    )
    assert links.canonical == "http://h.test/docs/v2/intro.html"
    assert not links.nofollow


def test_robots_meta_nofollow_and_xhtml_declaration() -> None:
    page = (
        '<?xml version="1.0" encoding="iso-8859-1"?><html xmlns="http://www.w3.org/1999/xhtml"><head>'
        '<meta name="ROBOTS" content="noindex, NoFollow"/></head><body><a href="x.html">é</a></body></html>'
    )
    links = extract_links(page, "http://h.test/")
    assert links.nofollow and links.links == ("http://h.test/x.html",)


def test_extract_links_from_empty_or_broken_html() -> None:
    assert extract_links("", "http://h.test/").links == ()
    assert extract_links("<a href='ok.html'>unclosed <div><p>", "http://h.test/d/").links == (
        "http://h.test/d/ok.html",
    )


def test_links_nested_deeper_than_libxml2s_tree_limit_are_found() -> None:
    depth = 1000  # libxml2 builds trees at most 256 elements deep (2048 with huge_tree)
    page = (
        '<html><head><link rel="canonical" href="deep.html"></head><body><a href="top.html">top</a>'
        + "<div>" * depth
        + '<a href="deep.html">deep</a><a rel="nofollow" href="no.html">no</a>'
        + "</div>" * depth
        + '<a href="after.html">after</a></body></html>'
    )
    links = extract_links(page, "http://h.test/docs/")
    assert links.links == (
        "http://h.test/docs/top.html",
        "http://h.test/docs/deep.html",
        "http://h.test/docs/after.html",
    )
    assert links.canonical == "http://h.test/docs/deep.html"
