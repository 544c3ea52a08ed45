"""The checks of an ingest read what changed, not every stored chunk and document: the token-limit check
counts each chunk once and still fails for every stored chunk over a limit; the text-coverage check
counts in SQL what extraction recorded."""

from __future__ import annotations

import pytest

from pipeline.check_reports import chunk_limits, extraction_coverage
from pipeline.embedding import MAX_WORD_PIECES, MODEL_NAME, MiniLMEmbedder
from pipeline.embedding.contract import MAX_INPUT_CHARACTERS
from pipeline.store.records import StoredChunk
from pipeline.tokens import count_tokens
from tests.support import save_page

WORD_PIECES = MiniLMEmbedder().word_piece_counts
OVERSIZED_TEXT = " ".join(f"parameter{i} controls batching" for i in range(150))


def _chunk(chunk_id: str, url: str, text: str, source: str = "docs") -> StoredChunk:
    return StoredChunk(chunk_id, source, url, "Tuning", ("Tuning",), text, f"Tuning\n{text}", 7, 0)


def _page(store, url: str, chunk: StoredChunk) -> None:
    """Make ``chunk`` the page's only chunk, as rechunking an edited page does."""
    store.chunks.replace(source=chunk.source, url=url, new_chunks=[chunk], chunked_key="k")


def _check(store, sources=("docs",), max_tokens=200, word_piece_model=MODEL_NAME):
    return chunk_limits(
        store,
        list(sources),
        max_tokens=max_tokens,
        word_piece_counts=WORD_PIECES,
        word_piece_model=word_piece_model,
        max_word_pieces=MAX_WORD_PIECES,
        max_characters=MAX_INPUT_CHARACTERS,
        batch=3,  # several batches for a handful of chunks
    )


@pytest.fixture
def pages(store):
    """Ten pages of one small chunk each, and another source's page."""
    for n in range(10):
        _page(store, f"http://d/{n}", _chunk(f"c{n}", f"http://d/{n}", f"Page {n} says how option {n} works."))
    _page(store, "http://e/0", _chunk("e0", "http://e/0", OVERSIZED_TEXT, source="other"))
    return store


def test_a_refresh_counts_only_chunks_no_check_has_counted(pages):
    first = _check(pages)
    assert first.within and first.chunks == first.counted == 10
    expected = max(count_tokens(f"Tuning\nPage {n} says how option {n} works.") for n in range(10))
    assert first.sizes.largest_tokens == expected

    again = _check(pages)
    assert again.within and again.chunks == 10 and again.counted == 0
    assert again.sizes == first.sizes

    _page(pages, "http://d/3", _chunk("c3-edited", "http://d/3", "Page 3 now says more about option 3."))
    edited = _check(pages)
    assert edited.within and edited.chunks == 10 and edited.counted == 1


def test_a_changed_chunk_over_a_limit_is_caught_and_keeps_failing(pages):
    _check(pages)
    _page(pages, "http://d/4", _chunk("oversized", "http://d/4", OVERSIZED_TEXT))
    caught = _check(pages)
    assert not caught.within and caught.counted == 1
    assert caught.sizes.over_tokens == 1 and caught.sizes.over_word_pieces == 1
    assert [size.chunk_id for size in caught.sizes.examples_over_tokens] == ["oversized"]
    assert caught.sizes.largest_tokens == count_tokens(f"Tuning\n{OVERSIZED_TEXT}")
    assert "oversized" in caught.metadata(200, MAX_WORD_PIECES, MAX_INPUT_CHARACTERS)["examples"]

    # Counted once, failing for as long as it is stored; a larger limit applies to the kept count.
    still = _check(pages)
    assert not still.within and still.counted == 0 and still.sizes.over_tokens == 1
    assert _check(pages, max_tokens=10_000).sizes.over_tokens == 0

    _page(pages, "http://d/4", _chunk("c4", "http://d/4", "Page 4 says how option 4 works."))
    fixed = _check(pages)
    assert fixed.within and fixed.counted == 1 and fixed.chunks == 10


def test_counts_of_deleted_chunks_are_forgotten_and_other_sources_stay_apart(pages):
    _check(pages, sources=("docs", "other"))
    assert not _check(pages, sources=("other",)).within
    assert _check(pages, sources=("docs",)).within

    _page(pages, "http://e/0", _chunk("e1", "http://e/0", "Short.", source="other"))
    after = _check(pages, sources=("docs", "other"))
    assert after.within and after.chunks == 11 and after.counted == 1
    with pages.engine.connect() as connection:
        kept = set(connection.exec_driver_sql("SELECT chunk_id FROM pipeline_chunk_sizes").scalars())
    assert kept == {f"c{n}" for n in range(10)} | {"e1"}


def test_another_word_piece_model_counts_every_chunk_again(pages):
    _check(pages)
    assert _check(pages, word_piece_model="another-model").counted == 10
    assert _check(pages, word_piece_model="another-model").counted == 0


def _extracted(store, url: str, sections: list[dict] | None, source: str = "docs") -> None:
    save_page(store, url, f"h-{url}", source=source)
    if sections is not None:
        store.pages.save_document(
            url=url,
            source=source,
            page_hash=f"h-{url}",
            extractor_version="v1",
            title="T",
            sections=sections,
            content_hash="d",
        )


def test_text_coverage_counts_pages_without_text_and_shows_the_first(store):
    for n in range(8):
        _extracted(store, f"http://d/text-{n}", [{"heading_path": ["T"], "text": "Some words."}])
    for n in range(12):
        _extracted(store, f"http://d/empty-{n:02}", [{"heading_path": ["T"], "text": "  \n"}])
    _extracted(store, "http://d/failed", None)  # its extraction failed: no document
    _extracted(store, "http://e/text", [{"heading_path": ["T"], "text": "Other words."}], source="other")

    coverage = extraction_coverage(store, ["docs", "other"])
    assert coverage.sources["docs"].pages == 21 and coverage.sources["docs"].without_text == 13
    assert coverage.share_with_text("docs") == 8 / 21 and coverage.share_with_text("other") == 1.0
    assert coverage.below(0.5) == ["docs"]
    details = coverage.metadata(0.5)
    assert details["pages_fetched"] == 22 and details["pages_with_text"] == 9
    table = details["pages_without_text"]
    assert "http://d/empty-00" in table and "http://d/empty-09" in table and "http://d/empty-10" not in table
    assert "… 3 more" in table  # 13 pages without text, 10 shown

    # An edit that gives a page text counts at once.
    _extracted(store, "http://d/failed", [{"heading_path": ["T"], "text": "Now it has words."}])
    assert extraction_coverage(store, ["docs"]).sources["docs"].without_text == 12
