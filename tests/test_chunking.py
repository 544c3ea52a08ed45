import re
from dataclasses import replace
from itertools import pairwise
from pathlib import Path

import pytest

from pipeline import tokens
from pipeline.chunking import MAX_HEADER_TOKENS, Chunk, ChunkingConfig, chunk_document, context_header
from pipeline.embedding import MAX_WORD_PIECES, MiniLMEmbedder
from pipeline.embedding.contract import MAX_INPUT_CHARACTERS
from pipeline.extract import Document, Section, extract_document
from pipeline.ingest.chunks import chunk_fits
from pipeline.sections import merge_short_sections

URL = "https://docs.example.com/guide/limits.html"
SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+")


def sentences(count: int, topic: str) -> list[str]:
    # Distinct, varied sentences so containment checks cannot pass by accident.
    return [
        f"The {topic} rule number {n} says that request {n * 7} must wait {n % 5 + 1} seconds before retrying."
        for n in range(count)
    ]


def paragraphs(count: int, topic: str, per_paragraph: int = 4) -> str:
    lines = sentences(count * per_paragraph, topic)
    return "\n\n".join(" ".join(lines[i : i + per_paragraph]) for i in range(0, len(lines), per_paragraph))


def document(*sections: Section, url: str = URL, title: str = "Limits") -> Document:
    return Document(url=url, title=title, sections=tuple(sections))


LONG_SECTION = Section(("Limits", "Rate limits"), paragraphs(12, "rate"))
# Dense JSON: about 1.6 MiniLM word pieces per cl100k token.
CODE = "\n".join(f'    {{"k{n}":[{n},{n + 1},{n + 2}],"v":{{"a":null,"b":[]}}}},' for n in range(120))


# Every heading section on its own, for the properties of cutting one section.
APART = ChunkingConfig(merge_below_tokens=0)


def assert_within_limits(chunks: list[Chunk], config: ChunkingConfig) -> None:
    for chunk in chunks:
        assert chunk.token_count == tokens.count_tokens(chunk.embedding_text)
        assert chunk.token_count <= config.max_tokens


def test_chunks_respect_max_tokens_and_are_exact_slices_of_their_section():
    nasty = Section(
        ("Odd",),
        "x" * 3000  # one "word" far over budget: token windows
        + "\n\n"
        + "長い日本語の文章です。" * 150  # multi-byte text without spaces
        + "\n\n"
        + " ".join(["supercalifragilistic"] * 400)  # one sentence far over budget
        + "\n\n"
        # Spaces before digits are tokens of their own, so packing estimates undercount
        # and only the exact check of each chunk keeps it within max_tokens.
        + " ".join(str(n) for n in range(600))
        + "\n\n"
        + CODE,
    )
    doc = document(LONG_SECTION, nasty, Section(("Tiny",), "Short."))
    for config in (ChunkingConfig(), ChunkingConfig(max_tokens=80, overlap_tokens=10, min_tokens=5)):
        chunks = chunk_document(doc, config)
        assert_within_limits(chunks, config)
        assert [chunk.position for chunk in chunks] == list(range(len(chunks)))
        texts = {section.heading_path: section.text for section in doc.sections}
        for chunk in chunks:
            # Code whitespace, blank lines and multi-byte characters survive intact.
            assert chunk.text in texts[chunk.heading_path]
            assert "\ufffd" not in chunk.text
        assert sum(chunk.heading_path == ("Odd",) for chunk in chunks) > 10
        numbers = " ".join(chunk.text for chunk in chunks if chunk.heading_path == ("Odd",)).split()
        assert {str(n) for n in range(600)} <= set(numbers)


def test_no_content_is_lost():
    doc = document(LONG_SECTION, Section(("Limits", "Quotas"), paragraphs(5, "quota")))
    chunks = chunk_document(doc, ChunkingConfig(max_tokens=100, overlap_tokens=20))
    for section in doc.sections:
        passages = [chunk.text for chunk in chunks if chunk.heading_path == section.heading_path]
        for sentence in SENTENCE_SPLIT.split(section.text):
            assert any(sentence.strip() in passage for passage in passages), sentence


def test_chunks_follow_sections_and_carry_heading_context():
    doc = document(
        Section((), "Intro before any heading."),
        Section(("Limits",), "Overview text."),
        Section(("Limits", "Rate limits", "Bursts"), "Burst text."),
    )
    chunks = chunk_document(doc, APART)
    assert [(chunk.heading_path, chunk.text) for chunk in chunks] == [
        ((), "Intro before any heading."),
        (("Limits",), "Overview text."),
        (("Limits", "Rate limits", "Bursts"), "Burst text."),
    ]
    # A first heading equal to the title is not repeated in the header.
    assert [chunk.embedding_text for chunk in chunks] == [
        "Limits\nIntro before any heading.",
        "Limits\nOverview text.",
        "Limits > Rate limits > Bursts\nBurst text.",
    ]
    assert all(chunk.url == URL and chunk.title == "Limits" for chunk in chunks)


def test_small_trailing_piece_merges_into_previous_chunk_when_it_fits():
    config = ChunkingConfig(max_tokens=60, overlap_tokens=0, min_tokens=20)
    for count in range(2, 60):
        # Packing estimates charge a token per paragraph break that cl100k often folds
        # into the preceding "." token, so some tails do fit once counted exactly.
        text = "\n\n".join(f"Item {n} is fine." for n in range(count))
        chunks = chunk_document(document(Section(("S",), text), title="T"), config)
        assert_within_limits(chunks, config)
        if len(chunks) < 2:
            continue
        previous, last = chunks[-2], chunks[-1]
        if tokens.count_tokens(last.text) < config.min_tokens:
            merged = text[text.index(previous.text) : text.index(last.text) + len(last.text)]
            assert tokens.count_tokens(f"T > S\n{merged}") > config.max_tokens, count


def test_long_headers_are_capped():
    path = tuple(f"Heading level {n} with a fairly long descriptive name" for n in range(12))
    header = context_header("Title", path)
    assert header.startswith("Title > Heading level 0")
    assert tokens.count_tokens(header) <= 40
    chunks = chunk_document(document(Section(path, paragraphs(4, "deep"))), ChunkingConfig(max_tokens=80))
    assert_within_limits(chunks, ChunkingConfig(max_tokens=80))


def test_consecutive_chunks_of_a_section_overlap():
    config = ChunkingConfig(max_tokens=120, overlap_tokens=30)
    chunks = chunk_document(document(LONG_SECTION), config)
    assert len(chunks) >= 4
    for previous, following in pairwise(chunks):
        shared = max(
            (size for size in range(1, len(previous.text)) if following.text.startswith(previous.text[-size:])),
            default=0,
        )
        overlap = previous.text[-shared:]
        assert tokens.count_tokens(overlap) >= 10, (previous.text, following.text)
        assert tokens.count_tokens(overlap) <= config.overlap_tokens
        assert len(overlap) < len(following.text)  # each chunk adds new text
    no_overlap = chunk_document(document(LONG_SECTION), replace(config, overlap_tokens=0))
    assert "".join(chunk.text for chunk in no_overlap).replace("\n\n", "") == LONG_SECTION.text.replace("\n\n", "")


def test_overlap_from_a_single_long_paragraph_starts_at_a_word():
    text = " ".join(sentences(30, "wide"))  # one paragraph, split by sentences
    chunks = chunk_document(document(Section(("Wide",), text)), ChunkingConfig(max_tokens=100, overlap_tokens=30))
    assert len(chunks) >= 3
    for following in chunks[1:]:
        start = text.index(following.text)
        assert start == 0 or text[start - 1] == " "


@pytest.fixture(scope="module")
def embedder() -> MiniLMEmbedder:
    return MiniLMEmbedder()


def test_fits_callback_splits_code_heavy_chunks(embedder):
    doc = document(Section(("Config", "Example"), "The configuration file looks like this:\n\n" + CODE))

    def word_pieces(chunk: Chunk) -> int:
        return embedder.word_piece_counts([chunk.embedding_text])[0]

    unchecked = chunk_document(doc)
    # The fixture is meaningful: 200 cl100k tokens of JSON exceed the model window.
    assert max(word_pieces(chunk) for chunk in unchecked) > MAX_WORD_PIECES

    def fits(text: str) -> bool:
        return embedder.word_piece_counts([text])[0] <= MAX_WORD_PIECES

    checked = chunk_document(doc, fits=fits)
    assert_within_limits(checked, ChunkingConfig())
    assert all(word_pieces(chunk) <= MAX_WORD_PIECES for chunk in checked)
    assert len(checked) > len(unchecked)
    for line in CODE.split("\n"):
        assert any(line in chunk.text for chunk in checked)


def test_fits_that_rejects_the_header_alone_raises():
    with pytest.raises(ValueError, match="fits"):
        chunk_document(document(Section(("A",), "Some text here.")), fits=lambda text: False)


def test_ids_are_stable_and_change_only_with_their_section():
    first = document(
        Section(("A",), paragraphs(6, "alpha")), Section(("B",), paragraphs(6, "beta")), Section(("C",), "Gamma.")
    )
    ids = [chunk.chunk_id for chunk in chunk_document(first, APART)]
    assert ids == [chunk.chunk_id for chunk in chunk_document(first, APART)]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[0-9a-f]{32}", chunk_id) for chunk_id in ids)

    edited = replace(first, sections=(first.sections[0], Section(("B",), "Beta was rewritten."), first.sections[2]))
    before = {chunk.heading_path: [] for chunk in chunk_document(first, APART)}
    for chunk in chunk_document(first, APART):
        before[chunk.heading_path].append(chunk.chunk_id)
    after = {path: [] for path in before}
    for chunk in chunk_document(edited, APART):
        after[chunk.heading_path].append(chunk.chunk_id)
    assert after[("A",)] == before[("A",)]
    assert after[("C",)] == before[("C",)]
    assert not set(after[("B",)]) & set(before[("B",)])

    moved = chunk_document(replace(first, url="https://docs.example.com/other.html"), APART)
    assert not {chunk.chunk_id for chunk in moved} & set(ids)


def test_duplicate_passages_get_distinct_ids_without_disturbing_others():
    repeated = Section(("Note",), "Requests are retried automatically.")
    with_duplicates = document(repeated, Section(("Body",), "Body text."), repeated, repeated)
    chunks = chunk_document(with_duplicates, APART)
    assert len({chunk.chunk_id for chunk in chunks}) == 4
    single = chunk_document(document(repeated, Section(("Body",), "Body text.")), APART)
    assert [chunk.chunk_id for chunk in chunks[:2]] == [chunk.chunk_id for chunk in single]


def test_empty_documents_produce_no_chunks():
    assert chunk_document(document()) == []
    assert chunk_document(document(Section(("Blank",), "  \n\n "))) == []


def test_config_validation_and_fingerprint():
    assert ChunkingConfig().fingerprint() == ChunkingConfig().fingerprint()
    fingerprints = {
        ChunkingConfig().fingerprint(),
        ChunkingConfig(max_tokens=250).fingerprint(),
        ChunkingConfig(overlap_tokens=0).fingerprint(),
        ChunkingConfig(min_tokens=5).fingerprint(),
    }
    assert len(fingerprints) == 4
    with pytest.raises(ValueError, match="max_tokens"):
        ChunkingConfig(max_tokens=10)
    with pytest.raises(ValueError, match="overlap_tokens"):
        ChunkingConfig(overlap_tokens=150)
    with pytest.raises(ValueError, match="min_tokens"):
        ChunkingConfig(min_tokens=-1)


def test_real_postgresql_page_chunks(embedder):
    page = Path("/usr/share/doc/postgresql-doc-15/html/sql-createindex.html").read_text(encoding="utf-8")
    doc = extract_document(page, "https://www.postgresql.org/docs/15/sql-createindex.html")
    chunks = chunk_document(doc, fits=lambda text: embedder.word_piece_counts([text])[0] <= MAX_WORD_PIECES)
    assert_within_limits(chunks, ChunkingConfig())
    merged = merge_short_sections(doc.sections, ChunkingConfig().merge_below_tokens, 200 - MAX_HEADER_TOKENS)
    texts = {section.heading_path: section.text for section in merged}
    assert len(merged) < len(doc.sections)  # the page has sections short enough to join
    assert all(chunk.text in texts[chunk.heading_path] for chunk in chunks)
    # The one-line summary is too short to stand alone: the synopsis joins it, under its own heading.
    assert chunks[0].embedding_text.startswith(
        "CREATE INDEX\nCREATE INDEX — define a new index\n\nSynopsis\n\nCREATE [ UNIQUE ] INDEX"
    )
    assert {chunk.heading_path for chunk in chunks} == set(texts)


POSTGRES_DOCS = Path("/usr/share/doc/postgresql-doc-15/html")
LISTING = re.compile(r'(<pre class="programlisting">)(.*?)(</pre>)', re.S)


def test_chunks_of_deeply_indented_code_stay_within_the_embeddings_character_cap(embedder):
    """Whitespace costs no word pieces, so deeply indented code can pass MiniLM's window and not 2,048 characters.

    The manual as published stays under the cap (no chunk of its 1,173 pages has more than 1,415
    characters, or 1,535 at a max_tokens of 2,000); this is one of its pages with long code listings
    (PL/pgSQL trigger functions), indented 24 spaces deeper as sites that nest code in lists render
    it, and chunked at a max_tokens of 400.
    """
    page = (POSTGRES_DOCS / "plpgsql-trigger.html").read_text(encoding="utf-8")
    indented = LISTING.sub(lambda m: m.group(1) + m.group(2).replace("\n", "\n" + " " * 24) + m.group(3), page)
    doc = extract_document(indented, "https://www.postgresql.org/docs/15/plpgsql-trigger.html")
    config = ChunkingConfig(max_tokens=400)

    window_only = chunk_document(
        doc, config, fits=lambda text: embedder.word_piece_counts([text])[0] <= MAX_WORD_PIECES
    )
    capped = chunk_document(doc, config, fits=chunk_fits(embedder.word_piece_counts))

    # The page is meaningful: the word-piece window alone lets a chunk past the cap.
    assert max(len(chunk.embedding_text) for chunk in window_only) > MAX_INPUT_CHARACTERS
    assert max(len(chunk.embedding_text) for chunk in capped) <= MAX_INPUT_CHARACTERS
    assert all(embedder.word_piece_counts([chunk.embedding_text])[0] <= MAX_WORD_PIECES for chunk in capped)
    for section in doc.sections:
        for line in section.text.split("\n"):
            assert any(line in chunk.text for chunk in capped if chunk.heading_path == section.heading_path), line


def test_the_character_cap_changes_no_chunk_of_the_published_manual_page(embedder):
    """Where the cap does not bind, the chunks and their IDs are what the word-piece window alone gives."""
    page = (POSTGRES_DOCS / "plpgsql-trigger.html").read_text(encoding="utf-8")
    doc = extract_document(page, "https://www.postgresql.org/docs/15/plpgsql-trigger.html")

    window_only = chunk_document(doc, fits=lambda text: embedder.word_piece_counts([text])[0] <= MAX_WORD_PIECES)

    assert chunk_document(doc, fits=chunk_fits(embedder.word_piece_counts)) == window_only
