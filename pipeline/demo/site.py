"""Renders the demo documentation site from its article sources.

Each page's article lives in ``pages/`` and the shared chrome (header, top
navigation, section sidebar, pager, footer) in ``template.html``; ``site.yaml``
orders sections and pages. The output is what a documentation generator such as
Sphinx or MkDocs publishes: every page a complete HTML document.
"""

from __future__ import annotations

import atexit
import posixpath
import shutil
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from html import escape
from pathlib import Path
from string import Template

import yaml

DEMO_DIR = Path(__file__).parent
PAGES_DIR = DEMO_DIR / "pages"
STATIC_DIR = DEMO_DIR / "static"
MANIFEST = DEMO_DIR / "site.yaml"
TEMPLATE = DEMO_DIR / "template.html"
INDENT = " " * 8


@dataclass(frozen=True)
class _Page:
    path: str
    section: str
    description: str
    updated: str
    head: str
    sidebar: tuple[str, ...]  # paths listed in the sidebar
    previous: str | None
    following: str | None
    root_relative: bool = False  # links from "/" rather than from the page's own folder

    def href(self, path: str) -> str:
        if self.root_relative:
            return "/" + path
        return posixpath.relpath(path, posixpath.dirname(self.path) or ".")


def _article(path: str) -> str:
    return (PAGES_DIR / path).read_text(encoding="utf-8")


def _title(path: str) -> str:
    article = _article(path)
    start = article.index(">", article.index("<h1")) + 1
    return article[start : article.index("</h1>", start)]


def _pages(manifest: dict) -> list[_Page]:
    pages = []
    for section in manifest["sections"]:
        paths = [page["path"] for page in section["pages"]]
        for position, page in enumerate(section["pages"]):
            pages.append(
                _Page(
                    path=page["path"],
                    section=section["title"],
                    description=page["description"],
                    updated=page["updated"],
                    head=page.get("head", ""),
                    sidebar=tuple(paths),
                    previous=paths[position - 1] if position > 0 else None,
                    following=paths[position + 1] if position + 1 < len(paths) else None,
                )
            )
    missing = manifest["not_found"]
    pages.append(
        _Page(
            path=missing["path"],
            section=missing["section"],
            description=missing["description"],
            updated=missing["updated"],
            head="",
            sidebar=tuple(missing["links"]),
            previous=None,
            following=None,
            root_relative=True,
        )
    )
    return pages


def _render(page: _Page, manifest: dict, labels: dict[str, str], template: Template) -> str:
    current, active = ' class="current"', ' class="active"'
    top_nav = "\n".join(
        f"{INDENT}<li{current if section['title'] == page.section else ''}>"
        f'<a href="{page.href(section["nav_path"])}">{section["nav_label"]}</a></li>'
        for section in manifest["sections"]
    )
    sidebar = "\n".join(
        f'{INDENT}<li{active}><a href="{page.href(path)}" aria-current="page">{labels[path]}</a></li>'
        if path == page.path
        else f'{INDENT}<li><a href="{page.href(path)}">{labels[path]}</a></li>'
        for path in page.sidebar
    )
    pager = []
    if page.previous:
        pager.append(f'{INDENT}<a class="prev" href="{page.href(page.previous)}">&larr; {_title(page.previous)}</a>')
    if page.following:
        pager.append(f'{INDENT}<a class="next" href="{page.href(page.following)}">{_title(page.following)} &rarr;</a>')
    return template.substitute(
        title=_title(page.path),
        description=escape(page.description),
        root=page.href("index.html").removesuffix("index.html"),
        head=f"\n  {page.head}" if page.head else "",
        top_nav=top_nav,
        section=page.section,
        sidebar=sidebar,
        article=_article(page.path).rstrip("\n"),
        pager="\n".join(pager),
        updated=page.updated,
        source=page.path.removesuffix(".html") + ".md",
    )


def build_site(target: Path) -> Path:
    """Render every page and copy the static files (styles, downloads, robots.txt) into ``target``."""
    manifest = yaml.safe_load(MANIFEST.read_text(encoding="utf-8"))
    template = Template(TEMPLATE.read_text(encoding="utf-8"))
    labels = {page["path"]: page["label"] for section in manifest["sections"] for page in section["pages"]}
    shutil.copytree(STATIC_DIR, target, dirs_exist_ok=True)
    for page in _pages(manifest):
        output = target / page.path
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(_render(page, manifest, labels, template), encoding="utf-8")
    return target


@lru_cache(maxsize=1)
def site_dir() -> Path:
    """The rendered site, built once per process into a temporary directory."""
    target = Path(tempfile.mkdtemp(prefix="demo-site-"))
    atexit.register(shutil.rmtree, target, True)
    return build_site(target)
