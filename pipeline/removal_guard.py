"""The deletion guard of refresh runs: how many stored pages one crawl may remove.

To a crawler, a bad night at the docs site looks exactly like pages that were deleted: a
404 storm during a broken deploy, robots.txt saying ``Disallow: /`` for a night, every page
redirected to a login wall. So a crawl's removals are collected while it runs and applied only
once it finished and they pass this guard (``pipeline.ingest.pages.record_crawl``):

- up to ``floor`` pages (3) always pass, so a small site still loses a single page normally;
- beyond that, at most ``max_share`` of the pages the source had stored before the run;
- never every stored page of the source.

``allow_full_removal`` lifts all three limits for a run that a person launched knowing the
site really lost those pages.

Otherwise :func:`check_removals` raises :class:`RemovalBlocked` before anything is deleted; its
message names the source, the counts and share by reason, and the knob that allows the removal.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

DEFAULT_MAX_REMOVAL_SHARE = 0.2
REMOVAL_FLOOR = 3


@dataclass(frozen=True)
class RemovalLimits:
    max_share: float = DEFAULT_MAX_REMOVAL_SHARE
    allow_full_removal: bool = False
    floor: int = REMOVAL_FLOOR


class RemovalBlocked(Exception):
    """A crawl would remove more of a source's stored pages than the guard allows; nothing was deleted.

    ``knob`` and ``value`` are the setting that allows this removal and the value it needs.
    """

    def __init__(self, message: str, *, source: str, knob: str, value: float | bool) -> None:
        super().__init__(message)
        self.source = source
        self.knob = knob
        self.value = value


def check_removals(source: str, stored: int, removals: Mapping[str, int], limits: RemovalLimits) -> None:
    """Pass, or raise :class:`RemovalBlocked`: ``removals`` counts pages to remove by reason,
    ``stored`` the source's pages before the run."""
    count = sum(removals.values())
    if count == 0 or limits.allow_full_removal:
        return
    if count >= stored:
        raise RemovalBlocked(
            f"{_summary(source, stored, removals)}; a run removes every page of a source only with "
            "allow_full_removal: true",
            source=source,
            knob="allow_full_removal",
            value=True,
        )
    share = count / stored
    if count <= limits.floor or share <= limits.max_share:
        return
    needed = math.ceil(share * 100) / 100
    raise RemovalBlocked(
        f"{_summary(source, stored, removals)}, more than max_removal_share {limits.max_share:g} allows "
        f"(a removal of up to {limits.floor} pages always passes); it needs max_removal_share: {needed:g}",
        source=source,
        knob="max_removal_share",
        value=needed,
    )


def _summary(source: str, stored: int, removals: Mapping[str, int]) -> str:
    count = sum(removals.values())
    largest_first = sorted(removals.items(), key=lambda item: (-item[1], item[0]))
    by_reason = ", ".join(f"{reason} {n} ({n / stored:.0%})" for reason, n in largest_first)
    return (
        f"the crawl of source {source!r} would remove {count} of its {stored} stored pages "
        f"({count / stored:.0%}): {by_reason}"
    )
