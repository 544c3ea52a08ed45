"""Per-step peak RSS of a run in this process: a step that briefly holds 100 MB gets the peak, the
steps before and after it do not, and the process's own peak survives the per-step resets."""

from __future__ import annotations

import dagster as dg

from benchmarks.step_memory import execute_in_process, peak_rss_mb

HELD = 100 * 1024**2


@dg.asset
def before() -> None:
    pass


@dg.asset(deps=[before])
def holds_100_mb() -> None:
    held = bytearray(HELD)  # zero-filled, so every page is resident
    del held


@dg.asset(deps=[holds_100_mb])
def after() -> None:
    pass


def test_the_step_that_holds_memory_gets_the_peak_and_its_neighbours_do_not():
    job = dg.Definitions(assets=[before, holds_100_mb, after], jobs=[dg.define_asset_job("three")]).resolve_job_def(
        "three"
    )
    with dg.DagsterInstance.ephemeral() as instance:
        result, steps = execute_in_process(job, instance)
    assert result.success
    assert list(steps) == ["before", "holds_100_mb", "after"]
    held_mb = HELD / 1024**2
    peak = steps["holds_100_mb"].peak_rss_mb
    assert peak - steps["before"].peak_rss_mb > 0.9 * held_mb
    assert peak - steps["after"].peak_rss_mb > 0.9 * held_mb
    assert peak - steps["holds_100_mb"].end_rss_mb > 0.9 * held_mb
    assert peak_rss_mb() >= peak
