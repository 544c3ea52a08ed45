"""A documentation site on loopback that changes from night to night as real sites do, and breaks on demand.

The site's *true state* is the pages it means to serve: two sections (``/guides/``, ``/reference/``),
each an index page linking its topic pages, every page with an ETag of its content so an
unchanged page answers 304. :meth:`EvolvingSite.evolve` edits, adds or deletes a page, as a
docs team does. A fault (:meth:`EvolvingSite.break_for_the_night`) replaces the answers of one
night without changing the true state: a maintenance redirect, a 503 window, a 404 storm, robots
``Disallow: /``. :meth:`EvolvingSite.repair` serves the true state again.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field

from tests.crawl.site_server import Reply, SiteServer

SECTIONS = ("guides", "reference")
MAINTENANCE_PATH = "/maintenance.html"
# Syllables for made-up topic words: each page's words are its own, so a chunk's text is unique.
_SYLLABLES = ("ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "da", "fi", "go", "hu", "pe", "qua", "ri")


def _word(rng: random.Random) -> str:
    return "".join(rng.choice(_SYLLABLES) for _ in range(3))


@dataclass
class Topic:
    title: str
    paragraphs: list[str]

    def html(self, links: tuple[str, ...] = ()) -> str:
        body = "".join(f"<h2>Part {n + 1}</h2><p>{text}</p>" for n, text in enumerate(self.paragraphs))
        anchors = "".join(f'<li><a href="{href}">{href}</a></li>' for href in links)
        return (
            f"<html><head><title>{self.title}</title></head><body><h1>{self.title}</h1>{body}"
            f"<ul>{anchors}</ul></body></html>"
        )


def _paragraph(rng: random.Random, sentences: int = 10) -> str:
    words = [_word(rng) for _ in range(4)]
    return " ".join(
        f"The {words[n % 4]} option number {n} decides how {words[(n + 1) % 4]} "
        f"reacts when {words[(n + 2) % 4]} is busy."
        for n in range(sentences)
    )


@dataclass
class EvolvingSite:
    server: SiteServer
    rng: random.Random
    # section -> page name -> topic (the true state)
    pages: dict[str, dict[str, Topic]] = field(default_factory=dict)
    _next_page: int = 0

    @classmethod
    def create(cls, server: SiteServer, seed: int, pages_per_section: int) -> EvolvingSite:
        site = cls(server, random.Random(seed))
        for section in SECTIONS:
            site.pages[section] = {}
            for _ in range(pages_per_section):
                site._add_page(section)
        site.repair()
        return site

    def _add_page(self, section: str) -> str:
        name = f"topic-{self._next_page}.html"
        self._next_page += 1
        self.pages[section][name] = Topic(
            f"{section.title()} {_word(self.rng)}", [_paragraph(self.rng) for _ in range(2)]
        )
        return name

    def url(self, section: str, name: str = "index.html") -> str:
        return self.server.url(f"/{section}/{name}")

    def served_urls(self, section: str) -> set[str]:
        """Every page of the section the site means to serve (its index included)."""
        return {self.url(section)} | {self.url(section, name) for name in self.pages[section]}

    def page_with_text(self, text: str) -> tuple[str, str] | None:
        for section, pages in self.pages.items():
            for name, topic in pages.items():
                if any(text in paragraph for paragraph in topic.paragraphs):
                    return section, name
        return None

    # What docs teams do ---------------------------------------------------------------------------
    def evolve(self) -> list[str]:
        """Zero or more ordinary changes of one night; returns what changed."""
        changes = []
        if self.rng.random() < 0.6:
            section = self.rng.choice(SECTIONS)
            name = self.rng.choice(sorted(self.pages[section]))
            changes.append(self.edit(section, name))
        if self.rng.random() < 0.3:
            section = self.rng.choice(SECTIONS)
            changes.append(f"added {section}/{self._add_page(section)}")
        if self.rng.random() < 0.3:
            section = self.rng.choice(SECTIONS)
            if len(self.pages[section]) > 4:
                name = self.rng.choice(sorted(self.pages[section]))
                del self.pages[section][name]
                changes.append(f"deleted {section}/{name}")
        self.repair()
        return changes

    def edit(self, section: str, name: str) -> str:
        topic = self.pages[section][name]
        topic.paragraphs[-1] += f" A new note on {_word(self.rng)} was added."
        self.repair()
        return f"edited {section}/{name}"

    def add_pages(self, section: str, count: int) -> str:
        names = [self._add_page(section) for _ in range(count)]
        self.repair()
        return f"added {len(names)} pages to {section}"

    # Serving ----------------------------------------------------------------------------------------
    def repair(self) -> None:
        """Serve the true state: every page with an ETag of its content, robots.txt allowing all."""
        routes = {"/robots.txt": Reply(200, "User-agent: *\nAllow: /\n", content_type="text/plain")}
        for section, pages in self.pages.items():
            index = Topic(f"{section.title()} index", [f"The {section} section lists its topics."])
            routes[f"/{section}/index.html"] = self._page_reply(index.html(tuple(sorted(pages))))
            for name, topic in pages.items():
                routes[f"/{section}/{name}"] = self._page_reply(topic.html())
        routes[MAINTENANCE_PATH] = Reply(200, "<html><body><h1>Down for maintenance</h1></body></html>")
        self.server.routes = routes

    @staticmethod
    def _page_reply(html: str) -> Reply:
        return Reply(200, html, headers={"ETag": f'"{hashlib.sha256(html.encode()).hexdigest()[:16]}"'})

    def break_for_the_night(self, fault: str, section: str) -> None:
        """Answer every page of ``section`` (or, for robots, the whole host) as ``fault`` says."""
        paths = [path for path in self.server.routes if path.startswith(f"/{section}/")]
        if fault == "maintenance_redirects":
            for path in paths:
                self.server.routes[path] = Reply(302, "", headers={"Location": MAINTENANCE_PATH})
        elif fault == "unavailable_503":
            for path in paths:
                self.server.routes[path] = Reply(503, "<html><body>busy</body></html>", headers={"Retry-After": "1"})
        elif fault == "not_found_storm":
            for path in paths:
                self.server.routes[path] = Reply(404, "<html><body>not found</body></html>")
        elif fault == "robots_disallow_all":
            self.server.routes["/robots.txt"] = Reply(200, "User-agent: *\nDisallow: /\n", content_type="text/plain")
        else:
            raise ValueError(f"no such site fault: {fault}")
