"""Keeping the registered sources equal to the sources file, and removing a dropped source's data.

A source that disappears from a *valid* sources file is not purged at once: it becomes
*orphaned* (``pipeline/store/orphans.py``). It is no longer crawled, but its pages, chunks and
vectors stay, so a file cut off at an entry boundary and fixed the next day, or a renamed
source, costs no refetching or re-embedding: a source listed again before the grace period
ends keeps everything, and a new source whose crawl reaches an orphan's URLs takes those pages
over. After the grace period (or at once, when a person names it in a ``remove_sources`` run)
the orphan is purged: its pages, documents and chunks are deleted from the state store first
(the truth), then its vectors from Chroma, then the lexical index is rebuilt without them.
A file that cannot be read or parsed changes nothing, and neither does a valid file that
lists no source at all (more likely a truncated upload than a wish to forget every site).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from pipeline.ingest.vectors import restore_vectors
from pipeline.store.lexical import LexicalIndex, LexicalSyncReport, sync_lexical
from pipeline.store.orphans import release_orphans
from pipeline.store.state import StateStore
from pipeline.store.vectors import VectorIndex


@dataclass(frozen=True)
class SourceChanges:
    """What one look at the sources file calls for."""

    added: tuple[str, ...]  # listed, not registered: register and ingest
    returned: tuple[str, ...]  # listed again while orphaned: they keep their data
    orphaned: tuple[str, ...]  # registered, no longer listed: unregister and orphan
    waiting: tuple[str, ...]  # no longer listed, but a run of them is queued or running
    expired: tuple[str, ...]  # orphaned longer than the grace period: purge

    @property
    def unchanged(self) -> bool:
        return not (self.added or self.returned or self.orphaned or self.waiting or self.expired)


def source_changes(
    listed: Sequence[str],
    registered: Iterable[str],
    orphaned: Mapping[str, datetime],
    *,
    busy: Collection[str],
    now: datetime,
    grace: timedelta,
) -> SourceChanges:
    """Compare the listed names (order kept) with the registered and orphaned ones.

    ``busy`` sources have a run queued or in progress: they are neither orphaned nor purged
    until it ended, so a run still writing cannot leave data behind a purge.
    """
    registered = set(registered)
    dropped = sorted(registered - set(listed))
    added = tuple(name for name in listed if name not in registered)
    return SourceChanges(
        added=added,
        returned=tuple(name for name in listed if name in orphaned),
        orphaned=tuple(name for name in dropped if name not in busy),
        waiting=tuple(name for name in dropped if name in busy),
        expired=tuple(
            sorted(
                name
                for name, since in orphaned.items()
                if name not in listed and name not in registered and name not in busy and since + grace <= now
            )
        ),
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
    """Delete each source's stored data and index entries; the lexical index is rebuilt once at the end.

    Chunks another source took over are stored under their new owner, so they are not deleted;
    their vectors, still labelled with the old source in Chroma, are relabelled from the stored
    embeddings instead (nothing is embedded).
    """
    removals = []
    for source in sources:
        deleted = store.delete_source(source)
        indexed = vectors.ids(source)
        taken_over = indexed & store.chunks.ids()
        restore_vectors(store, vectors, taken_over)
        removals.append(
            SourceRemoval(
                source=source,
                pages=deleted.pages,
                documents=deleted.documents,
                chunks=deleted.chunks,
                vectors=vectors.delete(indexed - taken_over),
            )
        )
    release_orphans(store, sources)
    return removals, sync_lexical(store, lexical)
