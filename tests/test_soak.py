"""A bounded soak: six simulated nights of the real deployment, every kind of fault injected at least once.

``benchmarks/soak.py`` runs the same nights (30 of them, on a seeded schedule, for
docs/reliability.md); here a fixed plan packs every fault into six nights, in a fresh process
whose settings come from the environment as on a dyno. After every night no page the site still
serves may be missing from Chroma or the lexical index, nothing already embedded may be embedded
again, no context set may be published as reranked with scores of other candidates, and no rerank
key may show in any file, log record or worker output.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.soak.nights import FAULTS
from tests.support import worker_env

REPO = Path(__file__).resolve().parents[1]
PLAN = ";".join(
    [
        "",  # the cold ingest
        "maintenance_redirects,key_rotation_401",
        "not_found_storm,truncated_sources_file",
        "robots_disallow_all,chroma_wiped",
        "renamed_source,unavailable_503",
        "killed_mid_embedding",
    ]
)

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def soak(tmp_path_factory) -> dict:
    output = tmp_path_factory.mktemp("soak") / "soak.json"
    finished = subprocess.run(
        [
            sys.executable,
            "-X",
            "faulthandler",
            "-W",
            "ignore",
            "-m",
            "benchmarks.soak",
            f"--plan={PLAN}",
            f"--json={output}",
        ],
        cwd=REPO,
        env=worker_env(),
        capture_output=True,
        text=True,
        timeout=540,
    )
    print(finished.stdout)
    # The exit status says how a soak that wrote nothing ended (a signal is negative); then its last words.
    assert output.exists(), f"the soak exited with {finished.returncode}: {finished.stderr[-4000:]}"
    return {**json.loads(output.read_text()), "returncode": finished.returncode}


def test_every_fault_was_injected_and_every_night_measured(soak: dict) -> None:
    assert set(soak["totals"]["faults_injected"]) == set(FAULTS)
    for night in soak["nights"]:
        assert night["pages_served"] >= 26 and night["context_sets"] == 4, night


def test_no_page_the_site_serves_is_lost(soak: dict) -> None:
    assert [(n["night"], n["lost_urls"]) for n in soak["nights"] if n["pages_lost"]] == []
    # A page not indexed yet waits only while its source's crawl is stopped or the source is out of the file.
    assert [
        n["night"]
        for n in soak["nights"]
        if n["pages_pending"]
        and "truncated_sources_file" not in n["faults"]
        and not any(run.startswith("ingest_source") for run in n["failed_runs"])
    ] == []


def test_the_deletion_guard_stops_the_storm_and_the_robots_night_and_says_how_to_override(soak: dict) -> None:
    for night in soak["nights"]:
        if {"not_found_storm", "robots_disallow_all"} & set(night["faults"]):
            stopped = [message for run, message in night["failed_runs"].items() if run.startswith("ingest_source")]
            assert stopped and all("allow_full_removal" in message for message in stopped), night


def test_nothing_is_embedded_twice(soak: dict) -> None:
    assert [
        (n["night"], n["chunks_embedded"], n["chunks_new"]) for n in soak["nights"] if n["chunks_re_embedded"]
    ] == []


def test_no_stale_ranking_and_no_key_is_published(soak: dict) -> None:
    assert [
        (n["night"], n["faults"], n["leaked_in"])
        for n in soak["nights"]
        if n["stale_publications"] or n["secrets_leaked"]
    ] == []
    assert soak["returncode"] == 0
