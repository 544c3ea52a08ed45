"""The pages stage's store: crawled pages (bodies, validators, links) and the documents extracted from them."""

from __future__ import annotations

import sys
import zlib
from collections.abc import Container, Iterable, Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from pipeline.store.records import PageBody, Revalidated, StoredDocument, StoredPage, TextCoverage
from pipeline.store.schema import documents, pages
from pipeline.store.sql import BATCH, aware, count_rows, in_batches, upsert, utcnow

if TYPE_CHECKING:
    from pipeline.store.state import StateStore

# Documents read at a time for chunking: each carries its page's whole text.
_DOCUMENTS_BATCH = 50


def stored_pages(engine: sa.Engine, where: sa.ColumnElement[bool]) -> dict[str, StoredPage]:
    """URL -> what a crawl needs to revisit the page, for the pages ``where`` selects."""
    query = sa.select(
        pages.c.url,
        pages.c.source,
        pages.c.etag,
        pages.c.last_modified,
        pages.c.content_hash,
        pages.c.links,
        pages.c.redirected_since,
    ).where(where)
    with engine.connect() as connection:
        return {
            row.url: StoredPage(
                row.url,
                row.source,
                row.etag,
                row.last_modified,
                row.content_hash,
                # A site's navigation links repeat on every page: interned, each URL is held once.
                links=None if row.links is None else tuple(sys.intern(link) for link in row.links),
                redirected_since=row.redirected_since and aware(row.redirected_since),
            )
            for row in connection.execute(query)
        }


class PageStore:
    """Pages and documents; reached as ``StateStore.pages``."""

    def __init__(self, database: StateStore) -> None:
        self._database = database

    # -- pages ---------------------------------------------------------------

    def known(self, source: str) -> dict[str, StoredPage]:
        return stored_pages(self._database.engine, pages.c.source == source)

    def with_content(self, source: str, content_hash: str, other_than: Container[str]) -> str | None:
        """Another stored page of the source with exactly this content, if any, not one of ``other_than``."""
        query = sa.select(pages.c.url).where(pages.c.source == source, pages.c.content_hash == content_hash)
        with self._database.engine.connect() as connection:
            return next((url for url in connection.scalars(query.order_by(pages.c.url)) if url not in other_than), None)

    def owner(self, url: str) -> str | None:
        with self._database.engine.connect() as connection:
            return connection.scalar(sa.select(pages.c.source).where(pages.c.url == url))

    def save(
        self,
        *,
        url: str,
        source: str,
        final_url: str | None,
        status: int | None,
        content_type: str | None,
        etag: str | None,
        last_modified: str | None,
        content_hash: str | None,
        html: str | None,
        fetched_at: datetime | None,
        links: Sequence[str] = (),
    ) -> None:
        """Record a fetched page and the links to follow from it; ``html=None`` keeps the stored body."""
        row: dict[str, Any] = {
            "url": url,
            "source": source,
            "final_url": final_url,
            "status": status,
            "content_type": content_type,
            "etag": etag,
            "last_modified": last_modified,
            "content_hash": content_hash,
            "fetched_at": fetched_at,
            "last_seen_at": utcnow(),
            "links": list(links),
            "redirected_since": None,
        }
        if html is not None:
            row["html_zlib"] = zlib.compress(html.encode("utf-8"), 6)
        with self._database.transaction() as connection:
            upsert(connection, pages, [row])

    def touch_many(self, revalidated: Sequence[Revalidated]) -> None:
        """Pages confirmed unchanged: refresh their validators, last-seen time and (if parsed again)
        links, in one transaction. A crawl revisits every stored page, so one write per page
        would cost a commit each."""
        seen_at = utcnow()
        common = {
            "last_seen_at": seen_at,
            "fetched_at": sa.bindparam("new_fetched_at", type_=pages.c.fetched_at.type),
            "redirected_since": None,
            "etag": sa.func.coalesce(sa.bindparam("new_etag", type_=sa.Text), pages.c.etag),
            "last_modified": sa.func.coalesce(sa.bindparam("new_last_modified", type_=sa.Text), pages.c.last_modified),
        }
        statement = sa.update(pages).where(pages.c.url == sa.bindparam("target_url"))
        with_links = statement.values(**common, links=sa.bindparam("new_links", type_=pages.c.links.type))
        without_links = statement.values(**common)
        rows: dict[bool, list[dict[str, Any]]] = {True: [], False: []}
        for page in revalidated:
            row: dict[str, Any] = {
                "target_url": page.url,
                "new_fetched_at": page.fetched_at,
                "new_etag": page.etag or None,
                "new_last_modified": page.last_modified or None,
            }
            if page.links is not None:
                row["new_links"] = list(page.links)
            rows[page.links is not None].append(row)
        with self._database.transaction() as connection:
            for parsed, statement in ((True, with_links), (False, without_links)):
                if rows[parsed]:
                    connection.execute(statement, rows[parsed])

    def mark_temporarily_redirected(self, url: str) -> None:
        """The page answered a temporary redirect: remember since when; body and validators stay."""
        with self._database.transaction() as connection:
            connection.execute(
                sa.update(pages)
                .where(pages.c.url == url, pages.c.redirected_since.is_(None))
                .values(redirected_since=utcnow())
            )

    def delete(self, urls: Iterable[str]) -> int:
        """Delete stored pages in one transaction; returns how many there were."""
        wanted = list(urls)
        deleted = 0
        with self._database.transaction() as connection:
            for start in range(0, len(wanted), BATCH):
                deleted += connection.execute(
                    sa.delete(pages).where(pages.c.url.in_(wanted[start : start + BATCH]))
                ).rowcount
        return deleted

    def count(self, source: str | None = None) -> int:
        return count_rows(self._database.engine, pages, source)

    def body(self, url: str) -> PageBody:
        """The stored body of a page and the content hash it was stored under."""
        with self._database.engine.connect() as connection:
            row = connection.execute(sa.select(pages.c.html_zlib, pages.c.content_hash).where(pages.c.url == url)).one()
        return PageBody(zlib.decompress(row.html_zlib).decode("utf-8"), row.content_hash)

    def text_coverage(self, source: str, examples: int) -> TextCoverage:
        """How many of the source's stored page bodies there are and how many yielded no text (a page
        without a document, its extraction failed, counts among them), with the first few of those."""
        joined = pages.outerjoin(documents, documents.c.url == pages.c.url)
        without_text = sa.or_(documents.c.url.is_(None), documents.c.has_text.is_not(True))
        bodies = sa.and_(pages.c.source == source, pages.c.html_zlib.is_not(None))
        counts = sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(sa.case((without_text, 1), else_=0)), 0))
        first = sa.select(pages.c.url).select_from(joined).where(bodies, without_text)
        with self._database.engine.connect() as connection:
            total, missing = connection.execute(counts.select_from(joined).where(bodies)).one()
            shown = tuple(connection.scalars(first.order_by(pages.c.url).limit(examples)))
        return TextCoverage(int(total), int(missing), shown)

    # -- documents -------------------------------------------------------------

    def to_extract(self, source: str, extractor_version: str) -> Iterator[str]:
        """URLs whose stored page body has no document extracted from it by this extractor, in URL order,
        read a batch at a time (a cold ingest extracts every page)."""
        joined = pages.outerjoin(documents, documents.c.url == pages.c.url)
        query = (
            sa.select(pages.c.url)
            .select_from(joined)
            .where(pages.c.source == source, pages.c.html_zlib.is_not(None))
            .where(
                sa.or_(
                    documents.c.url.is_(None),
                    documents.c.page_hash != pages.c.content_hash,
                    documents.c.extractor_version != extractor_version,
                )
            )
        )
        for rows in in_batches(self._database.engine, query, pages.c.url, BATCH):
            yield from (row.url for row in rows)

    def save_document(
        self,
        *,
        url: str,
        source: str,
        page_hash: str,
        extractor_version: str,
        title: str,
        sections: list[dict[str, Any]],
        content_hash: str,
    ) -> None:
        row = {
            "url": url,
            "source": source,
            "page_hash": page_hash,
            "extractor_version": extractor_version,
            "title": title,
            "sections": sections,
            "content_hash": content_hash,
            "has_text": any(section["text"].strip() for section in sections),
            "extracted_at": utcnow(),
        }
        with self._database.transaction() as connection:
            upsert(connection, documents, [row])

    def delete_orphan_documents(self, source: str) -> int:
        """Drop documents whose page is gone; returns how many."""
        orphan = sa.and_(documents.c.source == source, ~sa.exists().where(pages.c.url == documents.c.url))
        with self._database.transaction() as connection:
            return connection.execute(sa.delete(documents).where(orphan)).rowcount

    def documents_to_chunk(self, source: str, chunker_fingerprint: str) -> Iterator[StoredDocument]:
        """Documents whose chunks were not produced from their current content and chunker settings, in URL
        order, read a few at a time: a cold ingest chunks every document, and all their text at once would
        grow the run's memory with the size of the site."""
        key = documents.c.content_hash + ":" + chunker_fingerprint
        query = (
            sa.select(documents.c.url, documents.c.title, documents.c.sections, documents.c.content_hash)
            .where(documents.c.source == source)
            .where(sa.or_(documents.c.chunked_key.is_(None), documents.c.chunked_key != key))
        )
        for rows in in_batches(self._database.engine, query, documents.c.url, _DOCUMENTS_BATCH):
            yield from (StoredDocument(row.url, row.title, tuple(row.sections), row.content_hash) for row in rows)

    def document_count(self, source: str | None = None) -> int:
        return count_rows(self._database.engine, documents, source)

    # -- source removal --------------------------------------------------------

    @staticmethod
    def delete_source(connection: Connection, source: str) -> tuple[int, int]:
        """Delete the source's documents and pages inside the caller's transaction; returns (documents, pages)."""
        return (
            connection.execute(sa.delete(documents).where(documents.c.source == source)).rowcount,
            connection.execute(sa.delete(pages).where(pages.c.source == source)).rowcount,
        )
