"""HTML page → clean, sectioned document text.

The extractor picks the page's main content container, drops page chrome
(navigation, sidebars, scripts, hidden elements, permalink anchors) and renders
what is left as plain text split into sections by headings. Code blocks keep their
exact whitespace; tables become ``cell | cell`` lines and list items ``- item``
lines, so the text stays readable for the embedding model and for the QA system
that reads the passages.

The walk over the parse tree is iterative: real-world HTML with thousands of
unclosed tags nests deeper than Python's recursion limit.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from bs4 import BeautifulSoup, NavigableString, PageElement, Tag

# Bump when extraction output changes so stored documents get re-extracted.
EXTRACTOR_VERSION = "1"


@dataclass(frozen=True)
class Section:
    heading_path: tuple[str, ...]  # enclosing headings, outermost first; () before the first heading
    text: str  # paragraphs separated by blank lines


@dataclass(frozen=True)
class Document:
    url: str
    title: str
    sections: tuple[Section, ...]

    @property
    def text(self) -> str:
        return "\n\n".join(section.text for section in self.sections)

    def content_hash(self) -> str:
        """sha256 over title, heading paths and texts; the URL is not part of it."""
        payload = json.dumps(
            [self.title, [[list(s.heading_path), s.text] for s in self.sections]],
            ensure_ascii=False,
            separators=(",", ":"),
        )
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()


_HEADING_LEVELS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}

# Never content. <footer> is here too: inside an article it holds bylines and
# "edit this page" links, not text worth retrieving.
_DROP_TAGS = frozenset(
    "nav footer aside script style noscript template svg math form button input select"
    " textarea label iframe object embed canvas audio video picture map dialog head title"
    " meta link".split()
)
# A <header> is chrome only at page level; inside an article or section it carries
# that part's title (HTML's "banner" landmark rule).
_SECTIONING_TAGS = frozenset({"article", "section", "main"})
_DROP_ROLES = frozenset({"navigation", "search", "banner", "contentinfo", "complementary", "menu", "menubar"})
# Matched against each class token and the id. Whole-word matches for short words so
# that e.g. DocBook's "guimenu" or Sphinx's "menuselection" content survives.
_CHROME_NAME = re.compile(
    r"sidebar|breadcrumb|navigation|skip-?link"
    r"|(?:^|[-_])(?:toc|toctree|menu|nav|navbar|navheader|navfooter|linenos|linenodiv)(?:$|[-_])",
    re.IGNORECASE,
)
_PERMALINK_CLASSES = frozenset(
    {"headerlink", "permalink", "anchorjs-link", "hash-link", "header-anchor", "anchor-link"}
)
_PERMALINK_TEXTS = frozenset({"¶", "§", "#", "🔗"})
# DocBook puts admonition titles in <h3 class="title"> inside div.note etc.; they
# label a box, they do not open a section.
_ADMONITION_CLASSES = frozenset({"note", "tip", "warning", "caution", "important", "admonition"})
_LIST_TAGS = frozenset({"ul", "ol", "menu", "dir"})
_BLOCK_TAGS = frozenset(
    "p div section article main header blockquote figure figcaption address details summary"
    " dl dt dd hr center fieldset legend caption li tr td th thead tbody tfoot body html"
    " h1 h2 h3 h4 h5 h6".split()
)
_LAYOUT_TABLE_MARKERS = [*_HEADING_LEVELS, "pre"]
# Main-content candidates, best first: <main>, role=main, <article>, then known
# documentation containers (Sphinx div.body/div.document, PostgreSQL #docContent,
# ...). Within a rank the first in document order wins.
_CONTAINER_RANKS = 4
_CONTAINER_CLASSES = frozenset({"body", "document", "rst-content", "markdown-body", "md-content"})
_CONTAINER_IDS = frozenset({"content", "doccontent", "main-content"})
_NEVER_CONTAINS_MAIN = frozenset({"nav", "aside", "template", "header", "footer", "script", "style", "head"})
_XML_DECLARATION = re.compile(r"^\s*<\?xml[^>]*\?>")


def extract_document(html: str, url: str) -> Document:
    """Parse ``html`` (fetched from ``url``) into a titled, sectioned document."""
    # DocBook emits XHTML with an XML declaration. The HTML parser reads it fine, but
    # BeautifulSoup would warn on every page; stripping it beats touching the
    # process-wide (and thread-unsafe) warning filters.
    soup = BeautifulSoup(_XML_DECLARATION.sub("", html, count=1), "lxml")
    walker = _Walker()
    walker.walk(_find_content_root(soup))
    title = walker.first_h1 or _page_title(soup) or _title_from_url(url)
    return Document(url=url, title=title, sections=tuple(walker.sections))


def _find_content_root(soup: BeautifulSoup) -> Tag:
    """The main content element, found in one pass that does not descend into chrome.

    Ancestors of the chosen element are never consulted again, so a body with class
    "sidebar-layout" still yields its <main>.
    """
    start: Tag = soup.body or soup
    best: list[Tag | None] = [None] * _CONTAINER_RANKS
    # Pushing children in reverse makes pops follow document order.
    stack: list[Tag] = [start]
    while stack:
        element = stack.pop()
        rank = _container_rank(element) if element is not start else None
        if rank == 0:
            return element
        if rank is not None and best[rank] is None:
            best[rank] = element
        stack.extend(
            child
            for child in reversed(element.contents)
            if isinstance(child, Tag) and child.name not in _NEVER_CONTAINS_MAIN and not _is_hidden(child)
        )
    return next((candidate for candidate in best if candidate is not None), start)


def _container_rank(tag: Tag) -> int | None:
    if tag.name == "main":
        return 0
    if tag.get("role") == "main":
        return 1
    if tag.name == "article":
        return 2
    element_id = tag.get("id")
    if isinstance(element_id, str) and element_id.lower() in _CONTAINER_IDS:
        return 3
    classes = tag.get("class")
    if classes and tag.name == "div" and not _CONTAINER_CLASSES.isdisjoint(classes):
        return 3
    return None


def _is_hidden(tag: Tag) -> bool:
    attrs = tag.attrs
    if not attrs:
        return False
    if "hidden" in attrs or attrs.get("aria-hidden") == "true":
        return True
    style = attrs.get("style")
    # A string: only multi-valued attributes such as class are parsed into lists.
    if isinstance(style, str) and style:
        compact = style.replace(" ", "").lower()
        return "display:none" in compact or "visibility:hidden" in compact
    return False


def _is_chrome(tag: Tag) -> bool:
    if tag.name in _DROP_TAGS:
        return True
    attrs = tag.attrs
    if not attrs:
        return False
    if _is_hidden(tag) or attrs.get("role") in _DROP_ROLES:
        return True
    classes = attrs.get("class") or ()
    if any(_CHROME_NAME.search(token) for token in classes):
        return True
    element_id = attrs.get("id")
    if isinstance(element_id, str) and _CHROME_NAME.search(element_id):
        return True
    if tag.name == "a":
        return not _PERMALINK_CLASSES.isdisjoint(classes) or tag.get_text().strip() in _PERMALINK_TEXTS
    return False


def _is_admonition_title(heading: Tag) -> bool:
    parent = heading.parent
    classes = parent.get("class") if parent is not None else None
    return classes is not None and not _ADMONITION_CLASSES.isdisjoint(classes)


def _is_layout_table(table: Tag) -> bool:
    """Tables that hold headings or code blocks lay out a page; they are not data."""
    return table.get("role") == "presentation" or table.find(_LAYOUT_TABLE_MARKERS) is not None


def _preformatted_text(pre: Tag) -> str:
    """A code block's text exactly as written, minus chrome such as copy buttons."""
    parts: list[str] = []
    stack: list[PageElement] = list(reversed(pre.contents))
    while stack:
        node = stack.pop()
        if isinstance(node, Tag):
            if node.name == "br":
                parts.append("\n")
            elif not _is_chrome(node):
                stack.extend(reversed(node.contents))
        elif type(node) is NavigableString:
            parts.append(node)
    text = "".join(parts).replace("\r\n", "\n").replace("\xa0", " ")
    # HTML ignores a newline right after <pre>; trailing blank lines carry nothing.
    return text.lstrip("\n").rstrip() if text.strip() else ""


def _page_title(soup: BeautifulSoup) -> str:
    title = soup.find("title")
    return " ".join(title.get_text().split()) if title is not None else ""


def _title_from_url(url: str) -> str:
    parts = urlsplit(url)
    segment = unquote(parts.path.rstrip("/").rpartition("/")[2])
    stem = re.sub(r"\.(?:html?|php|aspx?)$", "", segment, flags=re.IGNORECASE)
    return stem or parts.netloc or url


class _Frame:
    """Output under construction for one element: finished paragraphs plus pending inline text."""

    __slots__ = ("kind", "paragraphs", "inline")

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.paragraphs: list[str] = []
        self.inline: list[str] = []

    def flush(self) -> None:
        if not self.inline:
            return
        text = "".join(self.inline)
        self.inline.clear()
        # "\n" in the buffer comes only from <br>; text-node newlines were made spaces.
        lines = (" ".join(line.split()) for line in text.split("\n"))
        paragraph = "\n".join(line for line in lines if line)
        if paragraph:
            self.paragraphs.append(paragraph)

    def lines(self) -> list[str]:
        self.flush()
        return [line for paragraph in self.paragraphs for line in paragraph.split("\n") if line]


class _Walker:
    """Renders a content root into sections, walking the tree with an explicit stack.

    Headings, lists, list items, tables, rows and cells each get a frame whose text
    is composed when the element closes; everything else writes into the innermost
    frame. Only headings met directly in the page flow (root frame) open sections;
    one inside a list item or table cell is just text.
    """

    def __init__(self) -> None:
        self.sections: list[Section] = []
        self.first_h1 = ""
        self._heading_stack: list[tuple[int, str]] = []
        self._root_frame = _Frame("root")
        self._frames: list[_Frame] = [self._root_frame]
        self._sectioning_depth = 0

    def walk(self, root: Tag) -> None:
        if root.name not in ("body", "html", "[document]"):
            self._sectioning_depth = 1
        work: list[PageElement | Callable[[], None]] = list(reversed(root.contents))
        while work:
            item = work.pop()
            if isinstance(item, Tag):
                self._enter(item, work)
            elif type(item) is NavigableString:
                # Comments, CDATA, doctypes and processing instructions are subclasses: skipped.
                self._frames[-1].inline.append(item.replace("\n", " "))
            elif callable(item):
                item()
        self._close_section()

    def _enter(self, tag: Tag, work: list) -> None:
        name = tag.name
        if _is_chrome(tag) or (name == "header" and self._sectioning_depth == 0):
            return
        frame = self._frames[-1]
        kind = frame.kind
        if name == "br":
            frame.inline.append("\n")
            return
        if name == "pre":
            frame.flush()
            code = _preformatted_text(tag)
            if code:
                frame.paragraphs.append(code)
            return
        level = _HEADING_LEVELS.get(name)
        if level is not None and kind == "root" and not _is_admonition_title(tag):
            self._push_frame(_Frame("heading"), work, level)
        elif name in _LIST_TAGS:
            self._push_frame(_Frame("list"), work)
        elif name == "li" and kind == "list":
            self._push_frame(_Frame("item"), work)
        elif name == "table" and not _is_layout_table(tag):
            self._push_frame(_Frame("table"), work)
        elif name == "tr" and kind == "table":
            self._push_frame(_Frame("row"), work)
        elif name in ("td", "th") and kind in ("table", "row"):
            self._push_frame(_Frame("cell"), work)
        elif name in _BLOCK_TAGS or name == "table":
            frame.flush()
            work.append(frame.flush)
        if name in _SECTIONING_TAGS:
            self._sectioning_depth += 1
            work.append(self._leave_sectioning)
        work.extend(reversed(tag.contents))

    def _leave_sectioning(self) -> None:
        self._sectioning_depth -= 1

    def _push_frame(self, frame: _Frame, work: list, heading_level: int = 0) -> None:
        self._frames[-1].flush()
        self._frames.append(frame)

        def close() -> None:
            self._frames.pop()
            self._finish(frame, heading_level)

        work.append(close)

    def _finish(self, frame: _Frame, heading_level: int) -> None:
        """Turn a closed frame into text for its parent frame (or a new section)."""
        kind = frame.kind
        if kind == "heading":
            self._open_section(heading_level, " ".join(frame.lines()))
            return
        if kind == "item":
            lines = frame.lines()
            text = "\n".join(["- " + lines[0], *("  " + line for line in lines[1:])]) if lines else ""
        elif kind == "row":
            frame.flush()
            # Cells arrive as paragraphs, empty ones included to keep columns aligned.
            text = " | ".join(frame.paragraphs) if any(frame.paragraphs) else ""
        elif kind == "cell":
            text = " ".join(frame.lines())
        else:  # list, table: one line per item or row
            text = "\n".join(frame.lines())
        parent = self._frames[-1]
        parent.flush()
        if text or kind == "cell":
            parent.paragraphs.append(text)

    def _open_section(self, level: int, heading: str) -> None:
        if not heading:
            return
        if level == 1 and not self.first_h1:
            self.first_h1 = heading
        self._close_section()
        while self._heading_stack and self._heading_stack[-1][0] >= level:
            self._heading_stack.pop()
        self._heading_stack.append((level, heading))

    def _close_section(self) -> None:
        frame = self._root_frame
        frame.flush()
        if frame.paragraphs:
            path = tuple(heading for _, heading in self._heading_stack)
            self.sections.append(Section(heading_path=path, text="\n\n".join(frame.paragraphs)))
            frame.paragraphs = []
