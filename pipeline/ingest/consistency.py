"""Stored chunks against the indexes: whether Chroma and the lexical index hold exactly the stored chunks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.store.lexical import LexicalIndex
from pipeline.store.state import StateStore
from pipeline.store.vectors import VectorIndex


@dataclass(frozen=True)
class IndexConsistency:
    """How the Chroma and lexical indexes differ from the stored chunks of one source (or all)."""

    stored: int
    missing_from_chroma: frozenset[str]
    extra_in_chroma: frozenset[str]
    missing_from_lexical: frozenset[str]
    extra_in_lexical: frozenset[str]

    @property
    def consistent(self) -> bool:
        return not (
            self.missing_from_chroma or self.extra_in_chroma or self.missing_from_lexical or self.extra_in_lexical
        )

    def metadata(self, examples: int = 5) -> dict[str, Any]:
        def sample(ids: frozenset[str]) -> str:
            return ", ".join(sorted(ids)[:examples])

        return {
            "stored_chunks": self.stored,
            "missing_from_chroma": len(self.missing_from_chroma),
            "extra_in_chroma": len(self.extra_in_chroma),
            "missing_from_lexical": len(self.missing_from_lexical),
            "extra_in_lexical": len(self.extra_in_lexical),
            "examples": "; ".join(
                f"{name}: {sample(ids)}"
                for name, ids in (
                    ("missing_from_chroma", self.missing_from_chroma),
                    ("extra_in_chroma", self.extra_in_chroma),
                    ("missing_from_lexical", self.missing_from_lexical),
                    ("extra_in_lexical", self.extra_in_lexical),
                )
                if ids
            )
            or "none",
        }


def check_index_consistency(
    store: StateStore, vectors: VectorIndex, lexical: LexicalIndex, source: str | None = None
) -> IndexConsistency:
    """Compare chunk IDs: state store (the truth) against Chroma and the lexical index."""
    stored = store.chunks.ids(source)
    in_chroma = vectors.ids(source)
    in_lexical = lexical.ids(source)
    return IndexConsistency(
        stored=len(stored),
        missing_from_chroma=frozenset(stored - in_chroma),
        extra_in_chroma=frozenset(in_chroma - stored),
        missing_from_lexical=frozenset(stored - in_lexical),
        extra_in_lexical=frozenset(in_lexical - stored),
    )
