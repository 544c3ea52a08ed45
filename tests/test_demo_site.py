"""The bundled demo: its docs site is well-formed and crawlable, and its sources, queries and labels agree with it.

The demo and the end-to-end tests crawl this site, so a broken link or a page the
crawler cannot reach shows up here first, with the file and line that caused it.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter, deque
from dataclasses import dataclass, field
from functools import cache
from html.parser import HTMLParser
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit
from urllib.robotparser import RobotFileParser

import pytest
import yaml

from pipeline.demo import LABELLED_QUERIES_FILE, QUERIES_FILE, SOURCES_FILE, site_dir

SITE_DIR = site_dir()

PAGES = sorted(SITE_DIR.rglob("*.html"))
# The 404 page is served for missing URLs, is linked from nowhere and is deliberately short.
ARTICLE_PAGES = [page for page in PAGES if page.name != "404.html"]

VOID_ELEMENTS = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
)
RAW_TEXT_ELEMENTS = frozenset({"script", "style"})
LANDMARKS = ("header", "nav", "main", "footer")
MIN_ARTICLE_WORDS = 300
VALID_GRADES = frozenset({1, 2})
ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclass
class ParsedPage:
    tags: Counter[str] = field(default_factory=Counter)
    sidebars: int = 0
    stylesheets: int = 0
    # (line, value) of every href and src, and the subset on <a> elements (what a crawler follows).
    references: list[tuple[int, str]] = field(default_factory=list)
    anchor_hrefs: list[str] = field(default_factory=list)
    ids: set[str] = field(default_factory=set)
    main_text: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def main_words(self) -> int:
        return len(" ".join(self.main_text).split())


class _PageParser(HTMLParser):
    """Collects structure, links, ids and article text, and reports mis-nested or unclosed elements."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.page = ParsedPage()
        self._open: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        line = self.getpos()[0]
        attributes = {name: value or "" for name, value in attrs}
        self.page.tags[tag] += 1
        classes = attributes.get("class", "").split()
        if tag == "aside" and "sidebar" in classes:
            self.page.sidebars += 1
        if tag == "link" and attributes.get("rel") == "stylesheet":
            self.page.stylesheets += 1
        if "id" in attributes:
            if attributes["id"] in self.page.ids:
                self.page.problems.append(f"line {line}: duplicate id {attributes['id']!r}")
            self.page.ids.add(attributes["id"])
        for name in ("href", "src"):
            if name in attributes:
                self.page.references.append((line, attributes[name]))
        if tag == "a" and "href" in attributes:
            self.page.anchor_hrefs.append(attributes["href"])
        if tag not in VOID_ELEMENTS:
            self._open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        line = self.getpos()[0]
        if tag in VOID_ELEMENTS:
            self.page.problems.append(f"line {line}: end tag </{tag}> for a void element")
            return
        if self._open and self._open[-1] == tag:
            self._open.pop()
            return
        innermost = self._open[-1] if self._open else "nothing"
        self.page.problems.append(f"line {line}: </{tag}> closes <{innermost}>")
        if tag in self._open:  # recover so one mistake is reported once
            del self._open[len(self._open) - 1 - self._open[::-1].index(tag) :]

    def handle_data(self, data: str) -> None:
        if "main" in self._open and not RAW_TEXT_ELEMENTS.intersection(self._open):
            self.page.main_text.append(data)

    def close(self) -> None:
        super().close()
        if self._open:
            self.page.problems.append(f"unclosed elements at end of file: {self._open}")


def parse_html(text: str) -> ParsedPage:
    parser = _PageParser()
    parser.feed(text)
    parser.close()
    return parser.page


@cache
def parsed(page: Path) -> ParsedPage:
    return parse_html(page.read_text(encoding="utf-8"))


def resolve(page: Path, reference: str) -> tuple[Path, str] | None:
    """The site file and fragment a link points at; None for links to other sites or schemes."""
    parts = urlsplit(reference)
    if parts.scheme or parts.netloc:
        return None
    path = unquote(parts.path)
    if not path:
        target = page
    elif path.startswith("/"):
        target = SITE_DIR / path.lstrip("/")
    else:
        target = page.parent / path
    if path.endswith("/"):
        target = target / "index.html"
    return target.resolve(), parts.fragment


def relative_name(path: Path) -> str:
    return path.relative_to(SITE_DIR.resolve()).as_posix()


def load_yaml(path: Path) -> dict:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), f"{path.name}: top level must be a mapping"
    return data


def squash(text: str) -> str:
    """Lower-cased, whitespace-free text: evidence is matched regardless of line breaks and inline markup."""
    return re.sub(r"\s+", "", text).lower()


def test_site_has_thirty_to_forty_pages() -> None:
    assert 30 <= len(PAGES) <= 40, f"{len(PAGES)} HTML pages in {SITE_DIR}"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: relative_name(page.resolve()))
def test_page_is_well_formed_with_site_chrome(page: Path) -> None:
    result = parsed(page)
    problems = result.problems
    assert not problems, "\n".join(problems)
    assert result.tags["h1"] == 1, f"expected exactly one <h1>, found {result.tags['h1']}"
    assert result.tags["title"] == 1
    for landmark in LANDMARKS:
        assert result.tags[landmark] >= 1, f"no <{landmark}>"
    assert result.sidebars >= 1, 'no <aside class="sidebar">'
    assert result.tags["script"] >= 1, "no <script>"
    assert result.stylesheets + result.tags["style"] >= 1, "no stylesheet link or <style>"


@pytest.mark.parametrize("page", ARTICLE_PAGES, ids=lambda page: relative_name(page.resolve()))
def test_article_has_substantive_prose_and_heading_hierarchy(page: Path) -> None:
    result = parsed(page)
    assert result.main_words >= MIN_ARTICLE_WORDS, f"only {result.main_words} words in <main>"
    assert result.tags["h2"] >= 1, "no <h2> sections under the <h1>"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: relative_name(page.resolve()))
def test_every_link_resolves_inside_the_site(page: Path) -> None:
    site_root = SITE_DIR.resolve()
    broken: list[str] = []
    for line, reference in parsed(page).references:
        resolved = resolve(page, reference)
        if resolved is None:
            continue
        target, fragment = resolved
        if not target.is_relative_to(site_root):
            broken.append(f"line {line}: {reference!r} leaves the site root")
        elif not target.is_file():
            broken.append(f"line {line}: {reference!r} -> missing {relative_name(target)}")
        elif fragment and target.suffix == ".html" and fragment not in parsed(target).ids:
            broken.append(f"line {line}: {reference!r} -> no id {fragment!r} in {relative_name(target)}")
    assert not broken, "\n".join(broken)


def test_every_article_is_reachable_by_a_crawl_of_the_demo_source() -> None:
    """Breadth-first over <a> links from index.html, as the crawler does, within the source's max_depth."""
    max_depth = load_yaml(SOURCES_FILE)["sources"][0]["max_depth"]
    start = (SITE_DIR / "index.html").resolve()
    depth_of = {start: 0}
    queue = deque([start])
    while queue:
        current = queue.popleft()
        if current.suffix != ".html" or depth_of[current] == max_depth:
            continue
        for href in parsed(current).anchor_hrefs:
            resolved = resolve(current, href)
            if resolved and resolved[0].is_file() and resolved[0] not in depth_of:
                depth_of[resolved[0]] = depth_of[current] + 1
                queue.append(resolved[0])
    unreachable = sorted(relative_name(page.resolve()) for page in ARTICLE_PAGES if page.resolve() not in depth_of)
    assert not unreachable, f"not reachable from index.html within depth {max_depth}: {unreachable}"
    # A linked non-HTML file keeps the crawler's content-type filter exercised by the demo.
    assert any(path.suffix != ".html" for path in depth_of), "no non-HTML file is linked from the site"


def test_robots_txt_allows_every_page() -> None:
    robots = RobotFileParser()
    robots.parse((SITE_DIR / "robots.txt").read_text(encoding="utf-8").splitlines())
    blocked = [
        relative_name(page.resolve())
        for page in PAGES
        if not robots.can_fetch("docs-to-answer-pipeline", f"http://127.0.0.1/{relative_name(page.resolve())}")
    ]
    assert not blocked, f"robots.txt blocks {blocked}"


def test_sources_file_points_at_the_loopback_demo_site() -> None:
    sources = load_yaml(SOURCES_FILE)["sources"]
    assert isinstance(sources, list) and len(sources) == 1
    source = sources[0]
    assert source["name"] == "user-guide"
    [start_url] = source["start_urls"]
    parts = urlsplit(start_url)
    assert parts.scheme == "http" and parts.path == "/" and parts.port
    assert ipaddress.ip_address(parts.hostname).is_loopback
    # Loopback is refused by the crawler's private-address guard unless the source opts in.
    assert source["allow_private_hosts"] is True
    assert isinstance(source["max_depth"], int) and source["max_depth"] >= 1
    assert isinstance(source["max_pages"], int) and source["max_pages"] >= len(PAGES)


def _check_query_entries(entries: object, file_name: str) -> dict[str, str]:
    assert isinstance(entries, list) and entries, f"{file_name}: 'queries' must be a non-empty list"
    ids = [entry.get("id") for entry in entries]
    duplicates = sorted(qid for qid, count in Counter(ids).items() if count > 1)
    assert not duplicates, f"{file_name}: duplicate ids {duplicates}"
    texts: dict[str, str] = {}
    for entry in entries:
        qid, text = entry.get("id"), entry.get("query")
        assert isinstance(qid, str) and ID_PATTERN.match(qid), f"{file_name}: invalid id {qid!r}"
        assert isinstance(text, str) and text.strip(), f"{file_name}: {qid} has no query text"
        texts[qid] = text
    return texts


def test_queries_file_has_valid_unique_ids() -> None:
    _check_query_entries(load_yaml(QUERIES_FILE)["queries"], QUERIES_FILE.name)


def test_labelled_queries_point_at_existing_pages_with_valid_grades() -> None:
    entries = load_yaml(LABELLED_QUERIES_FILE)["queries"]
    texts = _check_query_entries(entries, LABELLED_QUERIES_FILE.name)
    assert len(entries) >= 40
    problems: list[str] = []
    for entry in entries:
        qid = entry["id"]
        relevant = entry.get("relevant")
        if not isinstance(relevant, list) or not relevant:
            problems.append(f"{qid}: no relevant pages")
            continue
        paths = [item.get("path") for item in relevant]
        if len(set(paths)) != len(paths):
            problems.append(f"{qid}: a page is listed twice")
        if not any(item.get("grade") == 2 for item in relevant):
            problems.append(f"{qid}: no grade-2 (answering) page")
        for item in relevant:
            path, grade, evidence = item.get("path"), item.get("grade"), item.get("evidence")
            # bool is an int subclass; `grade: true` must not pass as grade 1.
            if isinstance(grade, bool) or grade not in VALID_GRADES:
                problems.append(f"{qid}: {path}: grade {grade!r} is not 1 or 2")
            if not isinstance(path, str) or PurePosixPath(path).is_absolute() or ".." in PurePosixPath(path).parts:
                problems.append(f"{qid}: path {path!r} must be relative to the site root")
                continue
            page = SITE_DIR / path
            if not page.is_file():
                problems.append(f"{qid}: {path} does not exist")
            elif evidence is not None and squash(evidence) not in squash("".join(parsed(page).main_text)):
                problems.append(f"{qid}: evidence {evidence!r} is not in the article text of {path}")
    assert not problems, "\n".join(problems)
    demo_texts = _check_query_entries(load_yaml(QUERIES_FILE)["queries"], QUERIES_FILE.name)
    changed = sorted(qid for qid in demo_texts.keys() & texts.keys() if demo_texts[qid] != texts[qid])
    assert not changed, f"ids shared with {QUERIES_FILE.name} must keep the same question text: {changed}"


def test_page_checker_reports_broken_markup() -> None:
    """The structure check must be able to fail: mis-nesting, unclosed elements and duplicate ids are caught."""
    problems = parse_html('<div id="a"><p>text</div><span id="a"><em>open').problems
    assert any("</div> closes <p>" in problem for problem in problems)
    assert any("duplicate id 'a'" in problem for problem in problems)
    assert any("unclosed elements" in problem for problem in problems)
