"""Soak: simulated nightly refreshes of a loopback docs site under a seeded schedule of faults.

    uv run python -m benchmarks.soak [--nights 30] [--seed 7] [--pages 12] [--plan PLAN] [--json FILE]

The deployment is the real one on SQLite in a temporary directory: ``pipeline.definitions`` with
its settings from the environment, the local rerank stand-in on loopback, two sources of one
evolving site (``tests/soak/site.py``). Each night (``tests/soak/nights.py``) ages the stored
timestamps by a day, changes the site as a docs team would, injects the night's faults, runs
the source sensor, every source's ingest and the context sets, and measures:

- pages lost: pages the site means to serve that are missing from Chroma or the lexical index;
- chunks re-embedded: texts embedded tonight beyond those no earlier night had stored;
- stale publications: context sets published as reranked whose scores are not the stand-in's
  scores for their current candidates;
- secrets leaked: files of the deployment, log records or a killed worker's output holding any
  rerank key used so far (raw, repr or JSON-escaped).

``--plan`` replaces the seeded schedule: nights separated by ``;``, faults of a night by ``,``
(the first night is the cold ingest), e.g. ``;not_found_storm;key_rotation_401,chroma_wiped``.
Prints a row per night and the totals; ``--json`` writes every night's report.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from pipeline.local import LocalRerankService, ServiceConfig
from pipeline.stand_ins import local_scorer
from tests.crawl.site_server import SiteServer
from tests.soak.nights import FAULTS, deployment_env, schedule

FIRST_KEY = "soak-key-0a1b2c3d4e5f"


def parse_plan(plan: str) -> list[list[str]]:
    nights = [[fault for fault in night.split(",") if fault] for night in plan.split(";")]
    unknown = {fault for night in nights for fault in night} - set(FAULTS)
    if unknown:
        raise SystemExit(f"--plan: unknown faults {sorted(unknown)}; known: {', '.join(FAULTS)}")
    return nights


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nights", type=int, default=30)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--pages", type=int, default=12, help="topic pages per source at the start")
    parser.add_argument("--plan", help="faults per night instead of the seeded schedule")
    parser.add_argument("--json", type=Path, help="write every night's report here")
    args = parser.parse_args(argv)
    plan = parse_plan(args.plan) if args.plan is not None else schedule(args.nights, args.seed)

    reports = []
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="soak-") as tmp,
        SiteServer() as server,
        LocalRerankService(ServiceConfig(api_key=FIRST_KEY), scorer=local_scorer()) as rerank,
    ):
        os.environ.update(deployment_env(Path(tmp), rerank.url, FIRST_KEY))
        from tests.soak.nights import Soak  # after the environment: it imports pipeline.definitions

        soak = Soak(Path(tmp), server, rerank, args.seed, args.pages)
        print(
            "night | faults | failed runs | served | lost | embedded | new | re-embedded "
            "| reranked sets | stale | leaked",
            flush=True,
        )
        for number, faults in enumerate(plan, start=1):
            report = soak.night(number, faults)
            reports.append(report)
            failed = "; ".join(f"{run}: {message[:90]}" for run, message in report.failed_runs.items()) or "-"
            print(
                f"{number} | {','.join(faults) or '-'} | {failed} | {report.pages_served} | {report.pages_lost} | "
                f"{report.chunks_embedded} | {report.chunks_new} | {report.chunks_re_embedded} | "
                f"{report.context_sets_reranked}/{report.context_sets} | {report.stale_publications} | "
                f"{report.secrets_leaked}",
                flush=True,
            )
    totals = {
        "nights": len(reports),
        "faults_injected": dict(Counter(fault for report in reports for fault in report.faults)),
        "pages_lost": sum(report.pages_lost for report in reports),
        "chunks_re_embedded": sum(report.chunks_re_embedded for report in reports),
        "stale_publications": sum(report.stale_publications for report in reports),
        "secrets_leaked": sum(report.secrets_leaked for report in reports),
        "failed_runs": sum(len(report.failed_runs) for report in reports),
        "seconds": round(time.monotonic() - started, 1),
    }
    print(json.dumps(totals, indent=2))
    if args.json:
        args.json.write_text(json.dumps({"totals": totals, "nights": [r.as_dict() for r in reports]}, indent=2))
    clean = not (
        totals["pages_lost"] or totals["chunks_re_embedded"] or totals["stale_publications"] or totals["secrets_leaked"]
    )
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
