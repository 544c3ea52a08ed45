from pipeline import tokens
from pipeline.chunking import ChunkingConfig, chunk_document
from pipeline.extract import Document, Section
from pipeline.sections import merge_short_sections

URL = "https://docs.example.com/guide/limits.html"
PASSAGE = 160  # one chunk's passage beside the longest header at the default 200 tokens


def words(count: int, word: str) -> str:
    return " ".join([word] * count)


def test_sections_under_80_tokens_merge_with_their_neighbours():
    sections = [
        Section(("A",), words(10, "alpha")),
        Section(("A", "B"), words(100, "beta")),
        Section(("A", "C"), words(30, "gamma")),
        Section(("D",), words(120, "delta")),
        Section(("D", "E"), words(5, "epsilon")),
    ]
    merged = merge_short_sections(sections, 80, PASSAGE)
    assert [section.heading_path for section in merged] == [("A",), ("D",)]
    first, second = (section.text for section in merged)
    assert first == "\n\n".join([words(10, "alpha"), "B", words(100, "beta"), "C", words(30, "gamma")])
    assert second == "\n\n".join([words(120, "delta"), "E", words(5, "epsilon")])
    assert all(tokens.count_tokens(section.text) <= PASSAGE for section in merged)


def test_a_short_section_stays_alone_when_merging_would_exceed_one_passage():
    sections = [
        Section(("P",), words(150, "pi")),
        Section(("Q",), words(20, "rho")),
        Section(("R",), words(150, "sigma")),
    ]
    assert merge_short_sections(sections, 80, PASSAGE) == tuple(sections)


def test_a_section_under_the_same_heading_joins_without_repeating_it_and_empty_ones_drop():
    sections = [Section(("A",), "First part."), Section((), "  \n "), Section(("A",), "Second part.")]
    assert merge_short_sections(sections, 80, PASSAGE) == (Section(("A",), "First part.\n\nSecond part."),)


def test_a_section_that_joins_nothing_comes_back_exactly_as_it_was():
    # Leading indentation (a code block opening a section) is kept: its chunks and IDs stay as before merging.
    alone = Section(("Code",), "    indented = True\n" + words(150, "code") + "\n")
    assert merge_short_sections([alone], 80, PASSAGE)[0] is alone
    assert merge_short_sections([alone], 0, PASSAGE)[0] is alone


def test_chunks_of_sections_that_merge_nothing_keep_their_ids():
    long_a, short_b, long_c = (
        Section(("A",), words(150, "alpha")),
        Section(("B",), "Beta."),
        Section(("C",), words(150, "gamma")),
    )
    # B joins A; C is on its own either way.
    page = Document(URL, "Limits", (long_a, short_b, long_c))
    apart = chunk_document(page, ChunkingConfig(merge_below_tokens=0))
    merged = chunk_document(page)
    assert [chunk.heading_path for chunk in apart] == [("A",), ("B",), ("C",)]
    assert [chunk.heading_path for chunk in merged] == [("A",), ("C",)]
    assert merged[0].text == f"{words(150, 'alpha')}\n\nB\n\nBeta."
    assert merged[1].chunk_id == apart[2].chunk_id
    assert merged[0].chunk_id not in {chunk.chunk_id for chunk in apart}
    assert ChunkingConfig().fingerprint() != ChunkingConfig(merge_below_tokens=0).fingerprint()
