"""URL normalisation and link extraction.

Every URL the crawler stores, compares or schedules goes through :func:`normalize_url`
first, so that two spellings of one resource collapse to one key:

- relative references are resolved against the base;
- the fragment is dropped; scheme and host are lower-cased; IDN hosts become punycode
  and IPv6 literals their compressed form;
- a host the HTTP client cannot address makes the URL invalid (None): malformed
  punycode (``xn--``), and a host ending in a number that is not a dotted-decimal IPv4
  address (``0177.0.0.1``, ``0x7f.1``, ``2130706433``: resolvers and browsers read them
  as addresses in octal, hex or shortened form, httpx refuses them);
- default ports (80 for http, 443 for https) and user-info are dropped;
- dot segments are removed and an empty path becomes ``/``;
- characters that are not allowed in a URL are percent-encoded, escapes of unreserved
  characters are decoded and the other escapes upper-cased; the query keeps its order (reordering could change meaning).

``/dir/`` and ``/dir/index.html`` stay distinct: only the server (by redirecting) or
the page (by ``<link rel="canonical">``) can say they are the same.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import quote, urljoin, urlsplit, urlunsplit

from lxml import etree

_SCHEMES = {"http": 80, "https": 443}
# Characters that may stay literal in a path / query; everything else is escaped.
_PATH_SAFE = "/:@!$&'()*+,;=-._~%"
_QUERY_SAFE = _PATH_SAFE + "?"
_ESCAPE = re.compile(r"%[0-9a-fA-F]{2}")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_STRIP_INSIDE = str.maketrans("", "", "\t\n\r")
_NUMERIC_LABEL = re.compile(r"[0-9]+|0x[0-9a-f]*")


# Pages of one site repeat the same navigation links: caching saves a third of the CPU
# a crawl spends outside the network stack.
@lru_cache(maxsize=16384)
def normalize_url(url: str, base: str | None = None) -> str | None:
    """The canonical spelling of ``url`` (resolved against ``base``), or None when it is
    not an http(s) URL with a host."""
    # Browsers strip surrounding whitespace and drop tabs and newlines inside URLs.
    url = url.strip().translate(_STRIP_INSIDE)
    if base is not None:
        url = urljoin(base, url)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = parts.hostname
    if scheme not in _SCHEMES or not host:
        return None
    host = _ascii_host(host)
    if host is None:
        return None
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = host if port in (None, _SCHEMES[scheme]) else f"{host}:{port}"
    path = _escape(remove_dot_segments(parts.path) or "/", _PATH_SAFE)
    query = _escape(parts.query, _QUERY_SAFE)
    return urlunsplit((scheme, netloc, path, query, ""))


def remove_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4, so that ``/a/./b/../c`` and ``/a/c`` compare equal."""
    output: list[str] = []
    segments = path.split("/")
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == ".":
            if last:
                output.append("")
        elif segment == "..":
            if len(output) > 1:
                output.pop()
            if last:
                output.append("")
        else:
            output.append(segment)
    result = "/".join(output)
    if path.startswith("/") and not result.startswith("/"):
        result = "/" + result
    return result


def origin_of(url: str) -> str:
    """``scheme://host[:port]`` of a normalised URL: the unit of robots.txt and politeness."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def directory_of(url: str) -> str:
    """A normalised URL cut after the last ``/`` of its path (query dropped)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path[: parts.path.rfind("/") + 1], "", ""))


def _ascii_host(host: str) -> str | None:
    if ":" in host:  # IPv6 literal: one spelling per address
        try:
            return str(ipaddress.IPv6Address(host))
        except ValueError:
            return None
    try:
        ascii_host = host if host.isascii() else host.encode("idna").decode("ascii")
        if "xn--" in ascii_host:
            ascii_host.encode("ascii").decode("idna")  # raises on malformed punycode
    except UnicodeError:
        return None
    if _NUMERIC_LABEL.fullmatch(ascii_host.rstrip(".").rsplit(".", 1)[-1]):
        try:
            return str(ipaddress.IPv4Address(ascii_host))
        except ValueError:
            return None
    return ascii_host


def _escape(text: str, safe: str) -> str:
    quoted = quote(text, safe=safe)
    # A literal '%' not followed by two hex digits is not an escape: encode it.
    quoted = re.sub(r"%(?![0-9a-fA-F]{2})", "%25", quoted)
    return _ESCAPE.sub(_normal_escape, quoted)


def _normal_escape(match: re.Match[str]) -> str:
    # RFC 3986 6.2.2: escapes of unreserved characters decode; the rest upper-case.
    char = chr(int(match.group(0)[1:], 16))
    return char if char in _UNRESERVED else match.group(0).upper()


@dataclass(frozen=True)
class PageLinks:
    links: tuple[str, ...]  # normalised http(s) URLs, first occurrence order, no duplicates
    canonical: str | None  # normalised <link rel="canonical"> target
    nofollow: bool  # <meta name="robots" content="nofollow">: the page asks not to follow links


def extract_links(html: str, page_url: str) -> PageLinks:
    """Links of a decoded HTML page: ``a``/``area`` hrefs (minus ``rel=nofollow``), the
    canonical link, and the page-level robots ``nofollow``. ``<base href>`` is honoured;
    ``mailto:``, ``javascript:``, ``data:`` and other non-http(s) targets are dropped.
    Links are found at any nesting depth."""
    collector = _LinkCollector()
    # Parse bytes with an explicit encoding: lxml refuses str input that carries an XML
    # encoding declaration (XHTML pages).
    parser = etree.HTMLParser(target=collector, encoding="utf-8", no_network=True)
    try:
        parser.feed(html.encode("utf-8"))
        parser.close()
    except etree.LxmlError:  # nothing to parse; the links seen so far stand
        pass
    base = page_url
    if collector.base_href:
        base = normalize_url(collector.base_href, page_url) or page_url
    canonical = normalize_url(collector.canonical_href, base) if collector.canonical_href else None
    links = (normalize_url(href, base) for href in collector.hrefs)
    return PageLinks(tuple(dict.fromkeys(url for url in links if url)), canonical, collector.nofollow)


class _LinkCollector:
    """An lxml parser target that sees start tags only. No tree is built, so libxml2's
    limit on tree depth (256 elements, which silently dropped every link of a page
    nested deeper) does not apply, and no limit is lifted either."""

    def __init__(self) -> None:
        self.hrefs: list[str] = []
        self.base_href: str | None = None
        self.canonical_href: str | None = None
        self.nofollow = False

    def start(self, tag: str, attrib: dict[str, str]) -> None:
        if tag in ("a", "area"):
            href = attrib.get("href")
            if href and "nofollow" not in (attrib.get("rel") or "").lower().split():
                self.hrefs.append(href)
        elif tag == "link":
            if (
                self.canonical_href is None
                and attrib.get("href")
                and "canonical" in (attrib.get("rel") or "").lower().split()
            ):
                self.canonical_href = attrib["href"]
        elif tag == "meta":
            if (attrib.get("name") or "").lower() == "robots":
                self.nofollow = self.nofollow or "nofollow" in (attrib.get("content") or "").lower()
        elif tag == "base" and self.base_href is None and attrib.get("href"):
            self.base_href = attrib["href"]

    def close(self) -> None:
        pass
