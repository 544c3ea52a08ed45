"""Orphaned sources: dropped from the sources file, their data kept for a grace period.

A source that disappears from the sources file is recorded here instead of being purged at
once: a file cut off at an entry boundary, or a renamed source, would otherwise delete pages,
chunks and vectors that the next run must fetch and embed again. An orphaned source is not
crawled; its passages stay retrievable until it is purged (``pipeline/source_sync.py``), and a
source whose crawl reaches a URL an orphaned source holds takes that page over with its
document, chunks and embeddings (:func:`adopt_pages`): a renamed source keeps its index.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from pipeline.store.pages import stored_pages
from pipeline.store.records import StoredPage
from pipeline.store.schema import chunks, documents, orphaned_sources, pages
from pipeline.store.sql import BATCH, aware
from pipeline.store.state import StateStore

_ORPHANS = sa.select(orphaned_sources.c.source)


def orphaned_since(store: StateStore) -> dict[str, datetime]:
    """Each orphaned source and when it was first found missing from the sources file."""
    with store.engine.connect() as connection:
        rows = connection.execute(sa.select(orphaned_sources.c.source, orphaned_sources.c.orphaned_at))
        return {source: aware(at) for source, at in rows}


def mark_orphaned(store: StateStore, sources: Iterable[str], at: datetime) -> None:
    """Record the sources as orphaned since ``at``; one already orphaned keeps its earlier time."""
    rows = [{"source": source, "orphaned_at": at} for source in sources]
    if rows:
        with store.transaction() as connection:
            dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
            insert = dialect.insert(orphaned_sources).on_conflict_do_nothing(index_elements=["source"])
            connection.execute(insert, rows)


def release_orphans(store: StateStore, sources: Iterable[str]) -> None:
    """The sources are listed again (or purged): they are no longer orphaned."""
    wanted = list(sources)
    if wanted:
        with store.transaction() as connection:
            connection.execute(sa.delete(orphaned_sources).where(orphaned_sources.c.source.in_(wanted)))


def orphaned_pages(store: StateStore, in_scope: Callable[[str], bool]) -> dict[str, StoredPage]:
    """Pages held by orphaned sources whose URL ``in_scope`` accepts: a crawl verifies them like its own."""
    held = stored_pages(store.engine, pages.c.source.in_(_ORPHANS))
    return {url: page for url, page in held.items() if in_scope(url)}


def orphaned_page_urls(store: StateStore) -> set[str]:
    with store.engine.connect() as connection:
        return set(connection.scalars(sa.select(pages.c.url).where(pages.c.source.in_(_ORPHANS))))


def adopt_pages(store: StateStore, source: str, urls: Iterable[str]) -> int:
    """Give ``source`` the pages of orphaned sources among ``urls``, with their documents and chunks.

    Validators, bodies, extracted text, chunk IDs and embeddings stay as they are, so nothing
    is fetched in full, extracted, chunked or embedded again; Chroma and the lexical index take
    the new owner from the next sync. Returns how many pages changed hands.
    """
    wanted = list(urls)
    adopted = 0
    with store.transaction() as connection:
        for start in range(0, len(wanted), BATCH):
            batch = wanted[start : start + BATCH]
            for table in (chunks, documents):
                connection.execute(
                    sa.update(table).where(table.c.url.in_(batch), table.c.source.in_(_ORPHANS)).values(source=source)
                )
            moved = sa.update(pages).where(pages.c.url.in_(batch), pages.c.source.in_(_ORPHANS)).values(source=source)
            adopted += connection.execute(moved).rowcount
    return adopted
