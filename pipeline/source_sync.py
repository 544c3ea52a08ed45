"""Keeping the registered sources equal to the sources file, and removing a dropped source's data.

A source that disappears from a *valid* sources file is removed: its pages, documents and
chunks are deleted from the state store first (the truth), then its vectors from Chroma,
then the lexical index is rebuilt without them, so its passages stop being retrievable.
A file that cannot be read or parsed changes nothing, and neither does a valid file that
lists no source at all (more likely a truncated upload than a wish to forget every site).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pipeline.store.lexical import LexicalIndex, LexicalSyncReport, sync_lexical
from pipeline.store.state import StateStore
from pipeline.store.vectors import VectorIndex


@dataclass(frozen=True)
class SourceChanges:
    added: tuple[str, ...]
    removed: tuple[str, ...]

    @property
    def unchanged(self) -> bool:
        return not (self.added or self.removed)


def source_changes(listed: Sequence[str], registered: Iterable[str]) -> SourceChanges:
    """What to add and remove so that the registered names equal the listed ones (listed order kept)."""
    registered = set(registered)
    return SourceChanges(
        added=tuple(name for name in listed if name not in registered),
        removed=tuple(sorted(registered - set(listed))),
    )


@dataclass(frozen=True)
class SourceRemoval:
    source: str
    pages: int
    documents: int
    chunks: int
    vectors: int


def remove_sources(
    store: StateStore, vectors: VectorIndex, lexical: LexicalIndex, sources: Sequence[str]
) -> tuple[list[SourceRemoval], LexicalSyncReport]:
    """Delete each source's stored data and index entries; the lexical index is rebuilt once at the end."""
    removals = []
    for source in sources:
        deleted = store.delete_source(source)
        removals.append(SourceRemoval(source=source, vectors=vectors.delete(vectors.ids(source)), **deleted))
    return removals, sync_lexical(store, lexical)
