"""An answer's text read back: whether it answers, and which passages its ``[n]`` markers cite."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from pipeline.answer.prompt import NOT_IN_THE_DOCS, NumberedPassage

# [3], [1, 2] and [1][2] (the latter as two markers).
_MARKER = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")


@dataclass(frozen=True)
class Citation:
    number: int
    chunk_id: str
    url: str


@dataclass(frozen=True)
class ParsedAnswer:
    """``answered`` is False for an abstention ("NOT IN THE DOCS: ..."). ``citations`` are the
    distinct passages cited, in order of first mention; ``unresolved`` the numbers no passage has."""

    answered: bool
    citations: tuple[Citation, ...]
    unresolved: tuple[int, ...]


def cited_numbers(text: str) -> list[int]:
    """Every number cited in ``text``, in order, repeats included."""
    return [int(number) for marker in _MARKER.findall(text) for number in marker.split(",")]


def is_abstention(text: str) -> bool:
    return text.lstrip().upper().startswith(NOT_IN_THE_DOCS)


def parse_answer(text: str, passages: Sequence[NumberedPassage]) -> ParsedAnswer:
    by_number = {passage.number: passage for passage in passages}
    citations: dict[int, Citation] = {}
    unresolved: list[int] = []
    for number in cited_numbers(text):
        passage = by_number.get(number)
        if passage is None:
            if number not in unresolved:
                unresolved.append(number)
        elif number not in citations:
            citations[number] = Citation(number, passage.chunk_id, passage.url)
    return ParsedAnswer(not is_abstention(text), tuple(citations.values()), tuple(unresolved))
