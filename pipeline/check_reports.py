"""What the asset checks measure: plain functions over the state store and the context sets.

Each returns a small report with ``passed``-style properties and the metadata the Dagster
UI shows (counts first, then a few examples), so ``pipeline/defs`` only wires them up.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pipeline.store.chunk_sizes import ChunkSize, SizeSummary
from pipeline.store.orphans import orphaned_since
from pipeline.store.records import ContextSet, TextCoverage
from pipeline.store.state import StateStore
from pipeline.tables import markdown_table
from pipeline.tokens import ENCODING_NAME, count_tokens

# Rows a check's table shows; the rest are counted in its last row.
EXAMPLES = 10


@dataclass(frozen=True)
class ExtractionCoverage:
    """Per source: how many pages are stored, and how many (and which first few) yielded no text."""

    sources: Mapping[str, TextCoverage]

    def share_with_text(self, source: str) -> float:
        coverage = self.sources[source]
        return (coverage.pages - coverage.without_text) / coverage.pages if coverage.pages else 1.0

    def below(self, min_share: float) -> list[str]:
        return sorted(source for source in self.sources if self.share_with_text(source) < min_share)

    def metadata(self, min_share: float) -> dict[str, Any]:
        pages = sum(coverage.pages for coverage in self.sources.values())
        missing = sum(coverage.without_text for coverage in self.sources.values())
        examples = [
            (source, url) for source, coverage in sorted(self.sources.items()) for url in coverage.first_without_text
        ]
        return {
            "pages_fetched": pages,
            "pages_with_text": pages - missing,
            "min_share": min_share,
            "share_with_text": {source: round(self.share_with_text(source), 4) for source in sorted(self.sources)},
            "pages_without_text": markdown_table(["source", "url"], examples, limit=EXAMPLES, total=missing),
        }


def extraction_coverage(store: StateStore, sources: Sequence[str]) -> ExtractionCoverage:
    """Which of the sources' stored pages yielded text (a failed extraction yields none): counted in
    SQL from what extraction recorded, whatever the number of pages."""
    return ExtractionCoverage({source: store.pages.text_coverage(source, EXAMPLES) for source in sources})


@dataclass(frozen=True)
class ChunkLimits:
    chunks: int
    counted: int  # chunks this check counted: those no earlier check had
    sizes: SizeSummary

    @property
    def within(self) -> bool:
        return not (self.sizes.over_tokens or self.sizes.over_word_pieces or self.sizes.over_characters)

    def metadata(self, max_tokens: int, max_word_pieces: int, max_characters: int) -> dict[str, Any]:
        sizes = self.sizes
        return {
            "chunks": self.chunks,
            "chunks_counted": self.counted,
            "max_tokens": max_tokens,
            "largest_chunk_tokens": sizes.largest_tokens,
            "chunks_over_max_tokens": sizes.over_tokens,
            "max_word_pieces": max_word_pieces,
            "largest_chunk_word_pieces": sizes.largest_word_pieces,
            "chunks_over_embedding_window": sizes.over_word_pieces,
            "max_characters": max_characters,
            "largest_chunk_characters": sizes.largest_characters,
            "chunks_over_max_characters": sizes.over_characters,
            "examples": markdown_table(
                ["chunk", "limit", "size"],
                [[size.chunk_id, "cl100k tokens", size.tokens] for size in sizes.examples_over_tokens]
                + [[size.chunk_id, "word pieces", size.word_pieces] for size in sizes.examples_over_word_pieces]
                + [[size.chunk_id, "characters", size.characters] for size in sizes.examples_over_characters],
                limit=EXAMPLES,
            ),
        }


def chunk_limits(
    store: StateStore,
    sources: Sequence[str],
    *,
    max_tokens: int,
    word_piece_counts: Callable[[Sequence[str]], Sequence[int]],
    word_piece_model: str,
    max_word_pieces: int,
    max_characters: int,
    batch: int = 512,
) -> ChunkLimits:
    """Every chunk of the sources (header included, as embedded) against the three limits.

    Counted afresh rather than trusting the stored ``token_count``: the check guards the
    chunker, so it must not reuse the chunker's own arithmetic. Each chunk is counted once, by
    the first check that finds it (the state store keeps the counts, by chunk ID), so a refresh
    that changed a few pages counts only their new chunks; the limits are applied to the kept
    counts, all of them, so a chunk over a limit fails every check for as long as it is stored.
    """
    measure = f"{ENCODING_NAME}+{word_piece_model}"
    counted = 0
    for pending in store.chunk_sizes.uncounted(sources, measure, batch):
        pieces = word_piece_counts([text for _, text in pending])
        store.chunk_sizes.save(
            [
                ChunkSize(chunk_id, count_tokens(text), word_pieces, len(text))
                for (chunk_id, text), word_pieces in zip(pending, pieces, strict=True)
            ],
            measure,
        )
        counted += len(pending)
    store.chunk_sizes.prune()
    sizes = store.chunk_sizes.summary(
        sources,
        measure,
        max_tokens=max_tokens,
        max_word_pieces=max_word_pieces,
        max_characters=max_characters,
        examples=EXAMPLES,
    )
    return ChunkLimits(chunks=sizes.chunks, counted=counted, sizes=sizes)


@dataclass(frozen=True)
class ContextSetCoverage:
    queries: int
    missing: tuple[str, ...]
    empty: tuple[str, ...]

    @property
    def complete(self) -> bool:
        return not (self.missing or self.empty)

    def metadata(self) -> dict[str, Any]:
        return {
            "queries": self.queries,
            "queries_without_context_set": len(self.missing),
            "context_sets_without_passages": len(self.empty),
            "examples": markdown_table(
                ["query", "problem"],
                [[query_id, "no context set"] for query_id in self.missing]
                + [[query_id, "no passages"] for query_id in self.empty],
                limit=EXAMPLES,
            ),
        }


def context_set_coverage(query_ids: Sequence[str], context_sets: Mapping[str, ContextSet]) -> ContextSetCoverage:
    """Queries without a context set, and context sets without a single passage."""
    return ContextSetCoverage(
        queries=len(query_ids),
        missing=tuple(query_id for query_id in query_ids if query_id not in context_sets),
        empty=tuple(
            query_id for query_id in query_ids if query_id in context_sets and not context_sets[query_id].passages
        ),
    )


@dataclass(frozen=True)
class RerankAccount:
    reranked: int
    explained: tuple[tuple[str, str], ...]
    unexplained: tuple[tuple[str, str], ...]

    def metadata(self) -> dict[str, Any]:
        return {
            "context_sets_reranked": self.reranked,
            "not_reranked_with_reason": len(self.explained),
            "inconsistent": len(self.unexplained),
            "not_reranked": markdown_table(["query", "reason"], self.explained, limit=EXAMPLES),
            "problems": markdown_table(["query", "problem"], self.unexplained, limit=EXAMPLES),
        }


def rerank_account(context_sets: Sequence[ContextSet]) -> RerankAccount:
    """Every context set is reranked (model named, every passage scored) or says why it is not."""
    reranked = 0
    explained: list[tuple[str, str]] = []
    unexplained: list[tuple[str, str]] = []
    for context_set in context_sets:
        query_id, reason = context_set.query_id, context_set.reason_not_reranked
        if context_set.reranked:
            unscored = sum(1 for passage in context_set.passages if passage.get("rerank_score") is None)
            if not context_set.model:
                unexplained.append((query_id, "marked reranked but names no model"))
            elif unscored:
                unexplained.append((query_id, f"marked reranked but {unscored} passages have no rerank score"))
            else:
                reranked += 1
        elif reason and reason.strip():
            explained.append((query_id, reason))
        else:
            unexplained.append((query_id, "not reranked and gives no reason"))
    return RerankAccount(reranked, tuple(explained), tuple(unexplained))


@dataclass(frozen=True)
class SourceFreshness:
    """Seconds since each source's last successful refresh (None: never refreshed)."""

    ages: Mapping[str, float | None]
    max_age_seconds: float

    @property
    def overdue(self) -> list[str]:
        return [source for source, age in sorted(self.ages.items()) if age is None or age > self.max_age_seconds]

    def metadata(self) -> dict[str, Any]:
        def hours(age: float | None) -> str:
            return "never" if age is None else f"{age / 3600:.1f}"

        known = [age for age in self.ages.values() if age is not None]
        return {
            "sources": len(self.ages),
            "overdue_sources": len(self.overdue),
            "max_age_hours": round(self.max_age_seconds / 3600, 2),
            "oldest_refresh_hours": round(max(known) / 3600, 2) if known else 0.0,
            "sources_by_age": markdown_table(
                ["source", "hours since last refresh", "overdue"],
                [
                    [source, hours(age), "yes" if source in self.overdue else "no"]
                    for source, age in sorted(
                        self.ages.items(), key=lambda item: -(float("inf") if item[1] is None else item[1])
                    )
                ],
                limit=EXAMPLES,
            ),
        }


def source_freshness(last_refreshed: Mapping[str, float | None], now: float, max_age_seconds: float) -> SourceFreshness:
    """Ages from last successful refresh timestamps (seconds since the epoch)."""
    return SourceFreshness(
        ages={source: None if at is None else now - at for source, at in last_refreshed.items()},
        max_age_seconds=max_age_seconds,
    )


@dataclass(frozen=True)
class OrphanedSource:
    source: str
    pages: int
    chunks: int
    orphaned_at: datetime
    purged_after: datetime


@dataclass(frozen=True)
class OrphanedSources:
    """Sources dropped from the sources file whose data waits for its grace period to end."""

    orphans: tuple[OrphanedSource, ...]
    grace_hours: float

    @property
    def holding_data(self) -> tuple[OrphanedSource, ...]:
        """Orphans with pages or chunks left (a renamed source's new name may have taken them all over)."""
        return tuple(orphan for orphan in self.orphans if orphan.pages or orphan.chunks)

    def metadata(self) -> dict[str, Any]:
        return {
            "orphaned_sources": len(self.orphans),
            "pages_awaiting_removal": sum(orphan.pages for orphan in self.orphans),
            "grace_hours": self.grace_hours,
            "orphans": markdown_table(
                ["source", "pages", "chunks", "orphaned at (UTC)", "purged after (UTC)"],
                [
                    [o.source, o.pages, o.chunks, f"{o.orphaned_at:%Y-%m-%d %H:%M}", f"{o.purged_after:%Y-%m-%d %H:%M}"]
                    for o in self.orphans
                ],
                limit=EXAMPLES,
            ),
        }


def orphaned_sources(store: StateStore, grace: timedelta) -> OrphanedSources:
    """Each orphaned source with what it still holds and when its data is purged."""
    return OrphanedSources(
        orphans=tuple(
            OrphanedSource(source, store.pages.count(source), store.chunks.count(source), since, since + grace)
            for source, since in sorted(orphaned_since(store).items(), key=lambda item: (item[1], item[0]))
        ),
        grace_hours=grace.total_seconds() / 3600,
    )
