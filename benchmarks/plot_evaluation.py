"""Plot the ranking stages on both labelled sets (docs/evaluation.png) from benchmarks/quality.py's JSON.

    uv run python benchmarks/quality.py --postgresql-data DIR --json /tmp/evaluation.json
    uv run python benchmarks/plot_evaluation.py /tmp/evaluation.json docs/evaluation.png

matplotlib is a dev-group dependency: the pipeline never imports it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt  # noqa: E402

from pipeline.evaluation.metrics import METRICS  # noqa: E402
from pipeline.evaluation.pipeline import RANKINGS  # noqa: E402

STAGE_LABELS = {
    "bm25": "BM25",
    "dense": "dense",
    "hybrid": "hybrid",
    "reranked": "reranked\n(local scorer)",
    "context_sets": "context\nsets",
}
SET_COLOURS = {"demo": "#4C72B0", "postgresql": "#DD8452", "flask": "#55A868"}


def plot(summary: dict, output: Path) -> None:
    sets = list(summary)
    figure, axes = plt.subplots(1, len(METRICS), figsize=(13, 4.2), sharey=False)
    width = 0.8 / len(sets)
    for axis, metric in zip(axes, METRICS, strict=True):
        for offset, name in enumerate(sets):
            values = [summary[name]["metrics"][stage][metric] for stage in RANKINGS]
            positions = [index + (offset - (len(sets) - 1) / 2) * width for index in range(len(RANKINGS))]
            bars = axis.bar(
                positions,
                values,
                width,
                label=f"{name} ({summary[name]['queries']} questions)",
                color=SET_COLOURS.get(name),
            )
            axis.bar_label(bars, fmt="%.3f", fontsize=7, padding=2)
        low = min(summary[name]["metrics"][stage][metric] for name in sets for stage in RANKINGS)
        axis.set_ylim(max(0.0, low - 0.1), 1.0)
        axis.set_xticks(range(len(RANKINGS)), [STAGE_LABELS[stage] for stage in RANKINGS], fontsize=8)
        axis.set_title(metric, fontsize=10)
        axis.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8, loc="upper left")
    figure.suptitle("Page-level retrieval quality of each ranking stage (higher is better)", fontsize=11)
    figure.tight_layout()
    figure.savefig(output, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("summary", type=Path, help="JSON written by benchmarks/quality.py --json")
    parser.add_argument("output", type=Path, help="PNG to write, e.g. docs/evaluation.png")
    arguments = parser.parse_args()
    plot(json.loads(arguments.summary.read_text()), arguments.output)
    print(f"wrote {arguments.output}")


if __name__ == "__main__":
    main()
