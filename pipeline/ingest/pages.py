"""Crawl results → pages: the first ingest stage (the package docstring says how the stages reconcile)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pipeline.crawl.crawler import PageResult
from pipeline.removal_guard import RemovalLimits, check_removals
from pipeline.store.orphans import adopt_pages, orphaned_page_urls
from pipeline.store.records import Revalidated
from pipeline.store.state import StateStore

FETCHED_OUTCOMES = {"new", "changed", "unchanged", "not_modified"}
# Pages confirmed unchanged are written this many at a time: a refresh where nothing changed is
# almost nothing else. Losing a batch to a killed run loses only last-seen times and validators.
REVALIDATED_BATCH = 500


@dataclass
class CrawlReport:
    outcomes: Counter = field(default_factory=Counter)
    failures_by_reason: Counter = field(default_factory=Counter)
    failures: list[tuple[str, str]] = field(default_factory=list)
    removals_by_reason: Counter = field(default_factory=Counter)
    bytes_downloaded: int = 0
    pages_taken_over: int = 0

    @property
    def pages_fetched(self) -> int:
        return sum(self.outcomes[outcome] for outcome in FETCHED_OUTCOMES)

    @property
    def pages_deleted(self) -> int:
        return self.outcomes["gone"] + self.outcomes["removed"]

    def metadata(self) -> dict[str, Any]:
        return {
            "pages_fetched": self.pages_fetched,
            "pages_new": self.outcomes["new"],
            "pages_changed": self.outcomes["changed"],
            "pages_not_modified": self.outcomes["not_modified"] + self.outcomes["unchanged"],
            "pages_deleted": self.pages_deleted,
            "pages_temporarily_redirected": self.outcomes["temporarily_redirected"],
            "pages_failed": self.outcomes["failed"],
            "pages_skipped": self.outcomes["skipped"],
            "bytes_downloaded": self.bytes_downloaded,
            "pages_taken_over": self.pages_taken_over,
        }


def record_crawl(
    store: StateStore, source: str, results: Iterable[PageResult], limits: RemovalLimits = RemovalLimits()
) -> CrawlReport:
    """Persist each crawl result as it arrives, except removals: those are applied once the crawl
    finished, if they pass the deletion guard; otherwise ``RemovalBlocked`` is raised and nothing
    is deleted (what was fetched is kept).

    A URL an orphaned source holds (one dropped from the sources file: renamed, say) is taken
    over before its result is recorded, so its page, chunks and embeddings carry on under ``source``
    (and count among the pages it had for the guard).
    """
    report = CrawlReport()
    stored_before = store.pages.count(source)
    removals: dict[str, str] = {}  # url -> reason
    adoptable = orphaned_page_urls(store)
    revalidated: list[Revalidated] = []
    for result in results:
        report.bytes_downloaded += result.bytes_downloaded
        if result.url in adoptable:
            adoptable.discard(result.url)
            report.pages_taken_over += adopt_pages(store, source, [result.url])
        outcome = result.outcome
        if outcome in ("new", "changed"):
            owner = store.pages.owner(result.url)
            # A page about to be removed is no duplicate: a page that moved (301) arrives as its old URL
            # removed, then its content under the new URL.
            not_duplicates = removals.keys() | {result.url}
            assert result.content_hash is not None, "a new or changed page comes with its content hash"
            duplicate = store.pages.with_content(source, result.content_hash, other_than=not_duplicates)
            if owner is not None and owner != source:
                # A page reachable from two sources is indexed once, under the first.
                outcome = "skipped"
                _record_failure(report, result.url, "owned_by_other_source", owner)
            elif duplicate is not None:
                # The same page under two URLs (``/`` and ``/index.html``) would rank twice.
                outcome = "skipped"
                _record_failure(report, result.url, "duplicate_content", duplicate)
                if owner is not None:
                    removals[result.url] = "duplicate_content"
            else:
                store.pages.save(
                    url=result.url,
                    source=source,
                    final_url=result.final_url,
                    status=result.status,
                    content_type=result.content_type,
                    etag=result.etag,
                    last_modified=result.last_modified,
                    content_hash=result.content_hash,
                    html=result.html,
                    fetched_at=result.fetched_at,
                    links=result.links,
                )
        elif outcome in ("unchanged", "not_modified"):
            revalidated.append(
                Revalidated(
                    result.url,
                    etag=result.etag,
                    last_modified=result.last_modified,
                    fetched_at=result.fetched_at,
                    # A 304 carries no body, so the stored links stand.
                    links=result.links if outcome == "unchanged" else None,
                )
            )
            if len(revalidated) >= REVALIDATED_BATCH:
                store.pages.touch_many(revalidated)
                revalidated.clear()
        elif outcome == "temporarily_redirected":
            store.pages.mark_temporarily_redirected(result.url)
        elif outcome in ("gone", "removed"):
            if store.pages.owner(result.url) == source:
                removals[result.url] = result.reason or outcome
            else:
                # Not a page of this source: a broken link (404) or a URL newly out of reach, not a deletion.
                outcome = "skipped"
                _record_failure(report, result.url, result.reason or "gone")
        elif outcome in ("failed", "skipped"):
            _record_failure(report, result.url, result.reason or outcome)
        report.outcomes[outcome] += 1
    store.pages.touch_many(revalidated)
    report.removals_by_reason.update(removals.values())
    check_removals(source, stored_before + report.pages_taken_over, report.removals_by_reason, limits)
    store.pages.delete(removals)
    return report


def _record_failure(report: CrawlReport, url: str, reason: str, detail: str | None = None) -> None:
    report.failures_by_reason[reason] += 1
    report.failures.append((url, f"{reason} ({detail})" if detail else reason))
