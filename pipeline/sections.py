"""Heading sections too short to stand alone, joined to their neighbours before chunking.

Splitting along headings makes many small sections: a parameter description, a note, a one-line
example. Embedded on its own, such a section loses the text around it and matches the wrong
questions. Joining it to its neighbours (up to one chunk's passage) keeps that text. The chunk
representation study (docs/evaluation.md) chose joining below 40 tokens: on the PostgreSQL manual
it lifted dense retrieval and the final order a little, re-embedding 544 of 11,767 chunks on the
upgrade, and unlike joining below 80 it kept the demo's final order.
"""

from __future__ import annotations

from collections.abc import Sequence

from pipeline import tokens
from pipeline.extract import Section


def merge_short_sections(sections: Sequence[Section], min_tokens: int, max_tokens: int) -> tuple[Section, ...]:
    """Sections with fewer than ``min_tokens`` cl100k tokens joined to their neighbours.

    A run of sections grows while it is under ``min_tokens``, and a short section joins the run
    before it, as long as the joined text stays within ``max_tokens``. A merged run keeps its
    first section's heading path; each later section's own heading leads its text, so what it
    was about is still embedded. A section that joins nothing is returned as it came, so its
    chunks (and their IDs) are the ones it had before merging existed.
    """
    if min_tokens <= 0:
        return tuple(sections)  # nothing is short: no section's tokens need counting
    runs: list[tuple[Section, int]] = []  # (section or merged run, its tokens)
    for section in sections:
        text = section.text.strip()
        if not text:
            continue
        count = tokens.count_tokens(text)
        if runs:
            previous, previous_count = runs[-1]
            if previous_count < min_tokens or count < min_tokens:
                starts_a_heading = section.heading_path and section.heading_path != previous.heading_path
                heading = section.heading_path[-1] if starts_a_heading else ""
                parts = [previous.text.strip(), heading, text] if heading else [previous.text.strip(), text]
                joined = "\n\n".join(parts)
                joined_count = tokens.count_tokens(joined)
                if joined_count <= max_tokens:
                    runs[-1] = (Section(previous.heading_path, joined), joined_count)
                    continue
        runs.append((section, count))
    return tuple(section for section, _ in runs)
