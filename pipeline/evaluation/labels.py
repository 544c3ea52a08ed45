"""Labelled query sets: which pages answer each question, graded, and the page paths rankings are matched on.

Labels grade pages (not chunks), so a ranked list of chunks is first reduced to the
ranked list of distinct pages it reaches, in order of each page's first chunk. A label's
``path`` is relative to the file's ``base_url`` when it has one, else to the root of
the page's own site (scheme, host and port), so one file fits a site wherever it is served.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from pipeline.inputs import where_undecodable
from pipeline.queries import query_entry_problem


@dataclass(frozen=True)
class LabelledQuery:
    query_id: str
    query: str
    relevant: Mapping[str, int]  # page path relative to the corpus root → grade (2 answers, 1 partly, 0 not)


@dataclass(frozen=True)
class LabelledSet:
    corpus: str
    queries: tuple[LabelledQuery, ...]
    base_url: str | None = None

    @property
    def qrels(self) -> dict[str, dict[str, int]]:
        return {query.query_id: dict(query.relevant) for query in self.queries}


class LabelFileError(ValueError):
    """A labelled query file is malformed; the message names the file and entry."""


def load_labelled_set(path: str | Path) -> LabelledSet:
    """The labelled set in a YAML file; raises :class:`LabelFileError` naming the file and entry.

    Queries are checked as in the queries file (``pipeline.queries.query_entry_problem``); a grade
    is a whole number, 0 or more.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
        document = yaml.safe_load(data.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise LabelFileError(f"{path}: not UTF-8 text ({where_undecodable(data, error)})") from None
    except (OSError, yaml.YAMLError) as error:
        raise LabelFileError(f"{path}: cannot read labelled queries ({error})") from None
    if not isinstance(document, dict) or not isinstance(document.get("queries"), list):
        raise LabelFileError(f"{path}: expected a mapping with 'corpus' and a 'queries' list")
    base_url = document.get("base_url")
    if base_url is not None and not (isinstance(base_url, str) and urlsplit(base_url).netloc):
        raise LabelFileError(f"{path}: base_url must be an absolute URL such as https://docs.example.com/guide/")
    queries = [
        _labelled_query(f"{path}: entry {index}", entry) for index, entry in enumerate(document["queries"], start=1)
    ]
    if not queries:
        raise LabelFileError(f"{path}: no labelled queries")
    duplicates = sorted(query_id for query_id, count in Counter(q.query_id for q in queries).items() if count > 1)
    if duplicates:
        raise LabelFileError(f"{path}: duplicate query ids {', '.join(duplicates)}")
    return LabelledSet(corpus=str(document.get("corpus", "")), queries=tuple(queries), base_url=base_url)


def _labelled_query(where: str, entry: object) -> LabelledQuery:
    if not isinstance(entry, dict):
        raise LabelFileError(f"{where}: expected a mapping with id, query and relevant [{{path, grade}}]")
    problem = query_entry_problem(entry.get("id"), entry.get("query"))
    if problem:
        raise LabelFileError(f"{where}: {problem}")
    query_id = str(entry["id"]).strip()
    items = entry.get("relevant")
    if not isinstance(items, list):
        raise LabelFileError(f"{where}: 'relevant' must be a list of {{path, grade}} (id {query_id!r})")
    relevant: dict[str, int] = {}
    for number, item in enumerate(items, start=1):
        page, grade = (item.get("path"), item.get("grade")) if isinstance(item, dict) else (None, None)
        if not isinstance(page, str) or not page.strip():
            raise LabelFileError(f"{where}: relevant {number}: 'path' must be a non-empty string (id {query_id!r})")
        # bool is an int subclass: `grade: true` must not pass as grade 1.
        if not isinstance(grade, int) or isinstance(grade, bool) or grade < 0:
            raise LabelFileError(
                f"{where}: relevant {number}: 'grade' must be a whole number, 0 or more, "
                f"got {grade!r} (id {query_id!r})"
            )
        relevant[page.strip()] = grade
    return LabelledQuery(query_id, entry["query"].strip(), relevant)


def page_path(url: str, base_url: str | None = None) -> str:
    """The labelled path of a page URL.

    Relative to ``base_url`` (default: the URL's site root), ``index.html`` for directories."""
    if base_url is None:
        parts = urlsplit(url)
        base_url = f"{parts.scheme}://{parts.netloc}/"
    if not url.startswith(base_url):
        return url
    path = url[len(base_url) :].lstrip("/")
    return path + "index.html" if path == "" or path.endswith("/") else path


def pages_in_order(urls: Iterable[str], base_url: str | None = None) -> list[str]:
    """Distinct page paths in order of first appearance (a chunk ranking → a page ranking)."""
    return list(dict.fromkeys(page_path(url, base_url) for url in urls))
