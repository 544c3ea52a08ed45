"""A synthetic documentation site of any size, generated page by page from a seed.

Nothing is held in memory: :meth:`SyntheticDocsSite.reply` builds the answer to one path from
the seed and the page number alone, so a 50,000-page site costs no more memory than a
1,000-page one, and the same seed always serves the same bytes (a refresh finds nothing
changed). Pages look like a real docs site's: a title, nested h2/h3 headings, paragraphs with
inline code and internal links, code blocks, tables, navigation. The site has an entry page
per section, ``robots.txt`` naming the sitemap, and ``sitemap.xml`` listing every page (a
sitemap index over files of :data:`URLS_PER_SITEMAP` URLs past that many pages). Every page
answers with an ETag and a Last-Modified, so revalidation gets 304s.

Layout under ``/docs/``: ``index.html`` links the sections, ``<section>/index.html`` links
the section's first pages, and page ``n`` is ``<section>/<slug>-<n>.html`` in section
``n % len(SECTIONS)``.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from html import escape

from tests.crawl.site_server import Reply

SECTIONS = ("tutorial", "guides", "reference", "administration", "internals", "faq", "release-notes", "api")
URLS_PER_SITEMAP = 10_000
# Links from a section's entry page; the sitemap lists the rest.
SECTION_INDEX_LINKS = 50
LAST_MODIFIED = "Mon, 03 Nov 2025 10:00:00 GMT"
# Made-up words from syllables: a page's vocabulary is its own, so no two chunks share their text.
_SYLLABLES = "ba ce di fo gu ha ke li mo nu pa qui ro se ta vu wi xo ya zu".split()
_COMMON = (
    "the server reads each value from the configuration file when it starts and keeps it until the next reload "
    "so a change takes effect only after a restart or a signal to the main process which then tells every worker"
).split()
_PAGE_PATH = re.compile(r"/docs/([a-z-]+)/([a-z]+)-(\d+)\.html")
_SECTION_PATH = re.compile(r"/docs/([a-z-]+)/index\.html")
_SITEMAP_PART = re.compile(r"/sitemaps/(\d+)\.xml")


@dataclass(frozen=True)
class SyntheticDocsSite:
    pages: int
    seed: int = 0
    base: str = "http://127.0.0.1"  # scheme://host:port the site is served at (sitemaps hold absolute URLs)

    # -- addresses -------------------------------------------------------------------------------

    def page_path(self, number: int) -> str:
        return f"/docs/{SECTIONS[number % len(SECTIONS)]}/{self._slug(number)}-{number}.html"

    def page_urls(self) -> list[str]:
        """Every page the site serves, entry pages included, as absolute URLs."""
        entries = ["/docs/index.html", *(f"/docs/{section}/index.html" for section in SECTIONS)]
        return [self.base + path for path in entries] + [self.base + self.page_path(n) for n in range(self.pages)]

    @property
    def start_url(self) -> str:
        return self.base + "/docs/index.html"

    # -- answers ---------------------------------------------------------------------------------

    def reply(self, path: str) -> Reply | None:
        """The answer to ``path``, or None for a path the site does not have."""
        if path == "/robots.txt":
            robots = f"User-agent: *\nDisallow: /docs/search/\n\nSitemap: {self.base}/sitemap.xml\n"
            return Reply(body=robots, content_type="text/plain")
        if path == "/sitemap.xml":
            return self._sitemap()
        if part := _SITEMAP_PART.fullmatch(path):
            return self._sitemap_part(int(part[1]))
        if path == "/docs/index.html":
            links = [(f"{section}/index.html", section.replace("-", " ").title()) for section in SECTIONS]
            return self._html_reply("home", lambda: self._page("Documentation", [], links))
        if (section := _SECTION_PATH.fullmatch(path)) and section[1] in SECTIONS:
            number = SECTIONS.index(section[1])
            return self._html_reply(section[1], lambda: self._section_index(number))
        page = _PAGE_PATH.fullmatch(path)
        if page and int(page[3]) < self.pages and path == self.page_path(int(page[3])):
            return self._html_reply(page[3], lambda: self._topic(int(page[3])))
        return None

    def _html_reply(self, key: str, html: Callable[[], str]) -> Reply:
        """A page made only when it is sent: a revalidation answered 304 does not generate it."""
        return Reply(render=html, headers={"ETag": f'"{self.seed}-{key}"', "Last-Modified": LAST_MODIFIED})

    def _sitemap(self) -> Reply:
        if self.pages <= URLS_PER_SITEMAP:
            return self._urlset(self.page_urls())
        parts = (len(self.page_urls()) + URLS_PER_SITEMAP - 1) // URLS_PER_SITEMAP
        entries = "".join(f"<sitemap><loc>{self.base}/sitemaps/{part}.xml</loc></sitemap>" for part in range(parts))
        return Reply(
            body=f'<?xml version="1.0" encoding="UTF-8"?><sitemapindex xmlns="{_SITEMAP_NS}">{entries}</sitemapindex>',
            content_type="application/xml",
        )

    def _sitemap_part(self, part: int) -> Reply | None:
        urls = self.page_urls()[part * URLS_PER_SITEMAP : (part + 1) * URLS_PER_SITEMAP]
        return self._urlset(urls) if urls and self.pages > URLS_PER_SITEMAP else None

    @staticmethod
    def _urlset(urls: list[str]) -> Reply:
        entries = "".join(f"<url><loc>{url}</loc><lastmod>2025-11-03</lastmod></url>" for url in urls)
        return Reply(
            body=f'<?xml version="1.0" encoding="UTF-8"?><urlset xmlns="{_SITEMAP_NS}">{entries}</urlset>',
            content_type="application/xml",
        )

    # -- pages -----------------------------------------------------------------------------------

    def _rng(self, number: int) -> random.Random:
        return random.Random(f"{self.seed}:{number}")  # a str seed hashes the same in every process

    def _slug(self, number: int) -> str:
        rng = self._rng(number)
        return "".join(rng.choice(_SYLLABLES) for _ in range(3))

    def _relative(self, number: int, section: int) -> str:
        """The link from a page of ``section`` to page ``number``."""
        target = number % len(SECTIONS)
        name = f"{self._slug(number)}-{number}.html"
        return name if target == section else f"../{SECTIONS[target]}/{name}"

    def _section_index(self, section: int) -> str:
        numbers = range(section, min(self.pages, section + SECTION_INDEX_LINKS * len(SECTIONS)), len(SECTIONS))
        links = [(self._relative(n, section), self._slug(n).title()) for n in numbers]
        title = SECTIONS[section].replace("-", " ").title()
        return self._page(title, [f"<p>The {title.lower()} part of the documentation.</p>"], links)

    def _topic(self, number: int) -> str:
        rng = self._rng(number)
        section = number % len(SECTIONS)
        words = [self._slug(number)] + ["".join(rng.choice(_SYLLABLES) for _ in range(3)) for _ in range(12)]
        related = [rng.randrange(self.pages) for _ in range(4)]
        neighbours = [n for n in (number - 1, number + 1) if 0 <= n < self.pages]

        def link(target: int) -> str:
            return f'<a href="{self._relative(target, section)}">{self._slug(target)}</a>'

        def sentence() -> str:
            chosen = rng.sample(_COMMON, 6) + rng.sample(words, 3)
            rng.shuffle(chosen)
            text = " ".join(chosen)
            if rng.random() < 0.3:
                text += f" with <code>{rng.choice(words)}_{rng.randrange(100)}</code>"
            if rng.random() < 0.15:
                text += f", see {link(rng.choice(related))}"
            return text[0].upper() + text[1:] + "."

        def paragraph() -> str:
            return "<p>" + " ".join(sentence() for _ in range(rng.randint(3, 7))) + "</p>"

        body = [paragraph()]
        for part in range(rng.randint(2, 5)):
            body.append(f"<h2 id='part-{part}'>{escape(rng.choice(words).title())} {rng.choice(_COMMON)}</h2>")
            body += [paragraph() for _ in range(rng.randint(1, 3))]
            if rng.random() < 0.5:
                code = "\n".join(
                    f"{rng.choice(words)} = {rng.choice(['on', 'off', str(rng.randrange(1000))])}"
                    for _ in range(rng.randint(3, 10))
                )
                body.append(f"<pre><code>{code}</code></pre>")
            if rng.random() < 0.3:
                rows = "".join(
                    f"<tr><td><code>{rng.choice(words)}</code></td><td>{rng.randrange(1, 512)}</td>"
                    f"<td>{' '.join(rng.sample(_COMMON, 5))}</td></tr>"
                    for _ in range(rng.randint(2, 6))
                )
                body.append(f"<table><tr><th>Name</th><th>Default</th><th>Meaning</th></tr>{rows}</table>")
            for sub in range(rng.randint(0, 2)):
                body.append(f"<h3 id='part-{part}-{sub}'>{escape(rng.choice(words).title())}</h3>")
                body.append(paragraph())
        title = f"{self._slug(number).title()} {words[1]}"
        links = [(self._relative(n, section), self._slug(n)) for n in neighbours + related]
        return self._page(title, body, links)

    @staticmethod
    def _page(title: str, body: list[str], links: list[tuple[str, str]]) -> str:
        navigation = "".join(f'<li><a href="{href}">{escape(label)}</a></li>' for href, label in links)
        return (
            f"<!DOCTYPE html><html><head><title>{escape(title)}</title></head><body>"
            '<header><a href="/docs/index.html">Docs home</a></header>'
            f"<nav><ul>{navigation}</ul></nav>"
            f"<main><h1>{escape(title)}</h1>{''.join(body)}</main>"
            "<footer>Generated documentation</footer></body></html>"
        )


_SITEMAP_NS = "http://www.sitemaps.org/schemas/sitemap/0.9"
