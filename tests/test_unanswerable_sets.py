"""The question sets the docs do not answer (abstention rate): well formed, and still unanswered by their corpus.

Each entry lists the terms an answer would need (`absent`); none may occur in the visible text of
any page of its corpus, so a docs change that starts answering a question fails here and names it.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import pytest
import yaml

from pipeline.demo import UNANSWERABLE_QUERIES_FILE, site_dir
from pipeline.queries import load_queries
from tests.test_labelled_sets import REPO_ROOT, _corpus_dir_for, _TextExtractor

UNANSWERABLE_SETS = [UNANSWERABLE_QUERIES_FILE, REPO_ROOT / "benchmarks/labels/unanswerable/postgresql15.yaml"]
LABELLED_SETS = [REPO_ROOT / "pipeline/demo/labelled_queries.yaml", REPO_ROOT / "benchmarks/labels/postgresql15.yaml"]


@cache
def _corpus_text(corpus_dir: Path) -> tuple[tuple[str, str], ...]:
    """(page path, visible text with whitespace runs as one space) of every HTML page under ``corpus_dir``."""
    pages = []
    for page in sorted(corpus_dir.rglob("*.html")):
        extractor = _TextExtractor()
        extractor.feed(page.read_text(encoding="utf-8", errors="replace"))
        pages.append((str(page.relative_to(corpus_dir)), " ".join("".join(extractor.parts).split())))
    return tuple(pages)


def _mentions(text: str, term: str) -> bool:
    """Whether a word of ``text`` starts with ``term`` (any case): "translat" finds "translation"."""
    return re.search(rf"\b{re.escape(term)}", text, re.IGNORECASE) is not None


def _corpus_dir(path: Path) -> Path:
    return site_dir() if path == UNANSWERABLE_QUERIES_FILE else _corpus_dir_for(path)


@pytest.mark.parametrize("path", UNANSWERABLE_SETS, ids=lambda p: p.parent.name + "/" + p.name)
def test_no_page_holds_the_terms_an_answer_would_need(path: Path) -> None:
    entries = yaml.safe_load(path.read_text(encoding="utf-8"))["queries"]
    pages = _corpus_text(_corpus_dir(path))
    assert len(pages) > 30
    found = [
        f"{entry['id']}: {term!r} on {page}"
        for entry in entries
        for term in entry["absent"]
        for page, text in pages
        if _mentions(text, term)
    ]
    assert all(entry["absent"] for entry in entries)
    assert not found, "the docs may answer these now:\n" + "\n".join(found)


@pytest.mark.parametrize(("unanswerable", "labelled"), zip(UNANSWERABLE_SETS, LABELLED_SETS, strict=True))
def test_a_set_of_8_to_12_questions_apart_from_the_labelled_ones(unanswerable: Path, labelled: Path) -> None:
    questions = load_queries(unanswerable)
    labelled_questions = load_queries(labelled)
    assert 8 <= len(questions) <= 12
    assert not {q.query_id for q in questions} & {q.query_id for q in labelled_questions}
    assert not {q.query for q in questions} & {q.query for q in labelled_questions}
