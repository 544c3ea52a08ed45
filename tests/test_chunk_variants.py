from itertools import pairwise

from pipeline import tokens
from pipeline.evaluation.chunk_variants import merge_small_sections, prefixed_chunks, window_chunks
from pipeline.extract import Document, Section

URL = "https://docs.example.com/guide/limits.html"
TEXT = " ".join(f"request {n} waits {n % 7} seconds." for n in range(150))


def words(count: int, word: str) -> str:
    return " ".join([word] * count)


def always(_: str) -> bool:
    return True


def test_naive_windows_are_the_title_and_200_tokens_every_170():
    page = Document(URL, "Limits", (Section(("Limits",), TEXT[:900]), Section(("Limits", "Retries"), TEXT[900:])))
    chunks = window_chunks(page, always)
    ids = tokens.encode(page.text)
    expected = [tokens.decode(ids[start : start + 200]).strip() for start in range(0, len(ids), 170)]
    if len(ids) - 170 * (len(expected) - 1) <= 30:  # the last window already reached the end
        expected.pop()
    assert len(expected) >= 3
    assert [chunk.embedding_text for chunk in chunks] == [f"Limits\n{body}" for body in expected]
    assert not any("Retries" in chunk.embedding_text for chunk in chunks)


def test_a_window_that_does_not_fit_is_shortened_and_no_text_is_skipped():
    page = Document(URL, "Limits", (Section(("Limits",), TEXT),))
    chunks = window_chunks(page, lambda text: len(text) <= 300)
    assert all(len(chunk.embedding_text) <= 300 for chunk in chunks)
    spans = []
    for chunk in chunks:
        body = chunk.embedding_text.removeprefix("Limits\n")
        start = TEXT.index(body, spans[-1][0] if spans else 0)
        spans.append((start, start + len(body)))
    assert spans[0][0] == 0 and spans[-1][1] == len(TEXT)
    assert all(following[0] <= previous[1] + 1 for previous, following in pairwise(spans))


def test_sections_under_80_tokens_merge_with_their_neighbours():
    sections = [
        Section(("A",), words(10, "alpha")),
        Section(("A", "B"), words(100, "beta")),
        Section(("A", "C"), words(30, "gamma")),
        Section(("D",), words(120, "delta")),
        Section(("D", "E"), words(5, "epsilon")),
    ]
    merged = merge_small_sections(sections)
    assert [section.heading_path for section in merged] == [("A",), ("D",)]
    first, second = (section.text for section in merged)
    assert first == "\n\n".join([words(10, "alpha"), "B", words(100, "beta"), "C", words(30, "gamma")])
    assert second == "\n\n".join([words(120, "delta"), "E", words(5, "epsilon")])


def test_a_small_section_stays_alone_when_merging_would_exceed_one_passage():
    sections = [
        Section(("P",), words(150, "pi")),
        Section(("Q",), words(20, "rho")),
        Section(("R",), words(150, "sigma")),
    ]
    assert merge_small_sections(sections) == tuple(sections)


def test_prefix_variants_embed_the_title_the_heading_path_or_nothing_above_the_passage():
    page = Document(URL, "Limits", (Section(("Limits", "Rate limits"), "Requests wait a second."),))
    assert [prefixed_chunks(page, always, prefix)[0].embedding_text for prefix in ("title", "path", "none")] == [
        "Limits\nRequests wait a second.",
        "Rate limits\nRequests wait a second.",
        "Requests wait a second.",
    ]
