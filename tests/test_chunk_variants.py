from itertools import pairwise

import pytest

from pipeline import tokens
from pipeline.evaluation.chunk_variants import VARIANTS, prefixed_chunks, window_chunks
from pipeline.extract import Document, Section

URL = "https://docs.example.com/guide/limits.html"
TEXT = " ".join(f"request {n} waits {n % 7} seconds." for n in range(150))


def words(count: int, word: str) -> str:
    return " ".join([word] * count)


def always(_: str) -> bool:
    return True


@pytest.mark.parametrize(("variant", "window", "stride"), [("naive-window", 200, 170), ("window-128", 128, 100)])
def test_windows_are_the_title_and_a_fixed_number_of_tokens_every_stride(variant, window, stride):
    page = Document(URL, "Limits", (Section(("Limits",), TEXT[:900]), Section(("Limits", "Retries"), TEXT[900:])))
    chunks = VARIANTS[variant](page, always)
    ids = tokens.encode(page.text)
    expected = [tokens.decode(ids[start : start + window]).strip() for start in range(0, len(ids), stride)]
    if len(ids) - stride * (len(expected) - 1) <= window - stride:  # the last window already reached the end
        expected.pop()
    assert len(expected) >= 3
    assert [chunk.embedding_text for chunk in chunks] == [f"Limits\n{body}" for body in expected]
    assert [chunk.text for chunk in chunks] == expected
    assert {(chunk.title, chunk.heading_path) for chunk in chunks} == {("Limits", ())}
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


def test_prefix_variants_embed_the_title_the_heading_path_or_nothing_above_the_passage():
    page = Document(URL, "Limits", (Section(("Limits", "Rate limits"), "Requests wait a second."),))
    assert [prefixed_chunks(page, always, prefix)[0].embedding_text for prefix in ("title", "path", "none")] == [
        "Limits\nRequests wait a second.",
        "Rate limits\nRequests wait a second.",
        "Requests wait a second.",
    ]


def test_merged_40_and_merged_120_merge_below_their_own_minimum():
    sections = (
        Section(("A",), words(50, "alpha")),
        Section(("B",), words(90, "beta")),
        Section(("C",), words(30, "gamma")),
    )
    page = Document(URL, "Limits", sections)
    # Under 40 only C is small: it joins B. Under 120 A joins B (140 tokens); C would overflow the passage.
    assert [chunk.heading_path for chunk in VARIANTS["merged-40"](page, always)] == [("A",), ("B",)]
    assert [chunk.heading_path for chunk in VARIANTS["merged-120"](page, always)] == [("A",), ("C",)]
    merged = VARIANTS["merged-120"](page, always)[0]
    assert merged.text == "\n\n".join([words(50, "alpha"), "B", words(90, "beta")])
    assert merged.embedding_text == f"Limits > A\n{merged.text}"


def test_a_variant_chunk_is_stored_with_its_passage_and_embedded_text():
    chunk = prefixed_chunks(Document(URL, "Limits", (Section(("Limits", "Rates"), "Wait."),)), always, "none")[0]
    stored = chunk.stored("7", 7)
    assert (stored.chunk_id, stored.url, stored.title, stored.heading_path) == ("7", URL, "Limits", ("Limits", "Rates"))
    assert (stored.text, stored.embedding_text, stored.token_count) == ("Wait.", "Wait.", tokens.count_tokens("Wait."))


BURSTS = "Bursts wait. " + words(50, "burst")


def test_summary_variant_puts_the_pages_lead_between_header_and_passage_once():
    page = Document(
        URL,
        "Limits",
        (
            Section(("Limits",), "Every key has limits. " + words(50, "lead")),
            Section(("Limits", "Burst"), BURSTS),
        ),
    )
    first, second = VARIANTS["summary-30"](page, always)
    lead = tokens.truncate_to_tokens(page.sections[0].text, 30)
    # The page's own first chunk already starts with the lead: not repeated.
    assert first.embedding_text == f"Limits\n{page.sections[0].text}"
    assert second.embedding_text == f"Limits > Burst\n{lead}\n{BURSTS}"
    assert second.text == BURSTS
    # A chunk that cannot carry the lead within fits() embeds without it.
    without_room = VARIANTS["summary-30"](page, lambda text: not text.startswith("Limits > Burst\nEvery"))
    assert without_room[1].embedding_text == f"Limits > Burst\n{BURSTS}"
