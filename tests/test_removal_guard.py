"""The deletion guard: the rule itself, and record_crawl applying removals only once they pass it."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import pytest

from pipeline.crawl.crawler import PageResult
from pipeline.ingest.pages import record_crawl
from pipeline.removal_guard import RemovalBlocked, RemovalLimits, check_removals
from pipeline.store.records import PageBody
from pipeline.store.state import StateStore

DEFAULT = RemovalLimits()


@pytest.mark.parametrize(
    ("stored", "removals"),
    [
        (100, {}),
        (2, {"http_404": 1}),  # a tiny site still loses a single page
        (4, {"http_404": 2, "out_of_scope": 1}),  # within the floor of 3, though 75%
        (100, {"http_404": 20}),  # exactly the share
        (10, {"redirected": 2}),
    ],
)
def test_removals_within_the_floor_or_the_share_pass(stored: int, removals: dict[str, int]) -> None:
    check_removals("docs", stored, removals, DEFAULT)


def test_a_share_above_the_limit_is_blocked_with_counts_by_reason_and_the_knob() -> None:
    with pytest.raises(RemovalBlocked) as blocked:
        check_removals("docs", 40, {"http_404": 9, "robots_disallowed": 1}, DEFAULT)
    message = str(blocked.value)
    assert "'docs'" in message and "10 of its 40 stored pages (25%)" in message
    assert "http_404 9 (22%), robots_disallowed 1 (2%)" in message
    assert "max_removal_share: 0.25" in message
    assert (blocked.value.knob, blocked.value.value) == ("max_removal_share", 0.25)
    check_removals("docs", 40, {"http_404": 9, "robots_disallowed": 1}, RemovalLimits(max_share=0.25))
    check_removals("docs", 40, {"http_404": 39}, RemovalLimits(allow_full_removal=True))


@pytest.mark.parametrize("stored", [1, 2, 3, 50])
def test_every_stored_page_is_removed_only_when_allowed(stored: int) -> None:
    with pytest.raises(RemovalBlocked) as blocked:
        check_removals("docs", stored, {"http_404": stored}, RemovalLimits(max_share=1.0))
    assert blocked.value.knob == "allow_full_removal" and "allow_full_removal: true" in str(blocked.value)
    check_removals("docs", stored, {"http_404": stored}, RemovalLimits(allow_full_removal=True))


# -- record_crawl on a real state store -------------------------------------------------------


def stored_site(store: StateStore, count: int) -> list[str]:
    urls = [f"http://d/p{n}.html" for n in range(count)]
    for url in urls:
        store.pages.save(
            url=url,
            source="docs",
            final_url=url,
            status=200,
            content_type="text/html",
            etag=None,
            last_modified=None,
            content_hash=url,
            html=f"<p>{url}</p>",
            fetched_at=datetime.now(UTC),
        )
    return urls


def test_a_404_storm_deletes_nothing_and_keeps_what_was_fetched(store: StateStore) -> None:
    urls = stored_site(store, 10)
    results = [PageResult(url, "gone", "http_404") for url in urls[:9]]
    results.append(PageResult("http://d/new.html", "new", content_hash="n", html="<p>new</p>"))
    with pytest.raises(RemovalBlocked, match="9 of its 10 stored pages"):
        record_crawl(store, "docs", results)
    assert set(store.pages.known("docs")) == {*urls, "http://d/new.html"}


def test_removals_are_applied_after_the_crawl_when_they_pass(store: StateStore) -> None:
    urls = stored_site(store, 10)
    store.pages.save(
        url="http://o/x.html",
        source="other",
        final_url=None,
        status=200,
        content_type="text/html",
        etag=None,
        last_modified=None,
        content_hash="x",
        html="<p>x</p>",
        fetched_at=None,
    )

    def results():
        yield PageResult(urls[0], "gone", "http_410")
        # Not deleted while the crawl runs: the guard can only judge the whole run.
        assert urls[0] in store.pages.known("docs")
        yield PageResult(urls[1], "removed", "robots_disallowed")
        yield PageResult("http://o/x.html", "gone", "http_404")  # another source's page: a broken link here

    report = record_crawl(store, "docs", results())
    assert set(store.pages.known("docs")) == set(urls[2:])
    assert store.pages.owner("http://o/x.html") == "other"
    assert report.removals_by_reason == Counter({"http_410": 1, "robots_disallowed": 1})
    assert report.metadata()["pages_deleted"] == 2 and report.failures_by_reason == Counter({"http_404": 1})


def test_a_temporarily_redirected_page_is_kept_and_remembers_since_when(store: StateStore) -> None:
    [url] = stored_site(store, 1)
    before = store.pages.known("docs")[url]
    report = record_crawl(store, "docs", [PageResult(url, "temporarily_redirected", "http_302", status=302)])
    assert report.metadata()["pages_temporarily_redirected"] == 1
    first = store.pages.known("docs")[url]
    assert first.redirected_since is not None and first.content_hash == before.content_hash
    record_crawl(store, "docs", [PageResult(url, "temporarily_redirected", "http_307", status=307)])
    assert store.pages.known("docs")[url].redirected_since == first.redirected_since  # since the first night
    record_crawl(store, "docs", [PageResult(url, "not_modified", status=304)])
    assert store.pages.known("docs")[url].redirected_since is None


def test_a_page_that_moved_is_stored_at_its_new_url_though_its_old_one_is_removed_only_at_the_end(
    store: StateStore,
) -> None:
    old, *_ = stored_site(store, 5)
    new = "http://d/moved.html"
    # What the crawler reports for a 301: the old URL removed, then the same content under the new one.
    record_crawl(
        store,
        "docs",
        [PageResult(old, "removed", "redirected"), PageResult(new, "new", content_hash=old, html=f"<p>{old}</p>")],
    )
    assert old not in store.pages.known("docs")
    assert store.pages.body(new) == PageBody(f"<p>{old}</p>", old)
