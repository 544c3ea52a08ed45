"""What a lexical index rebuild holds in memory, per chunk: bm25s's own build against the streamed one.

    uv run python benchmarks/lexical_rebuild.py [--copies 1 4] [--html-dir /usr/share/doc/postgresql-doc-15/html]

The chunks are the PostgreSQL manual's (``apt-get install postgresql-doc-15``), extracted and
chunked as the pipeline does, written once to a file; ``--copies N`` repeats them N times under new
chunk IDs, so the corpus grows with real text. For each size, two fresh processes read the rows from
the file one at a time, as the store hands them over, and build the same index:

- ``bm25s``: what a rebuild did before: every row kept and analysed into token lists, then
  ``bm25s.BM25.index`` over all of them;
- ``streamed``: :meth:`pipeline.store.lexical.LexicalIndex.rebuild`, which keeps each chunk's term
  counts only (:mod:`pipeline.store.bm25`).

Each process prints its peak RSS above what it held before the build (VmHWM after resetting it,
Linux), and the build's seconds; the table gives both per chunk and the ratio of the two builds,
measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from benchmarks.step_memory import reset_peak, status_kb
from pipeline.chunking import chunk_document
from pipeline.extract import extract_document

HTML_DIR = Path("/usr/share/doc/postgresql-doc-15/html")


def write_chunks(html_dir: Path, target: Path) -> int:
    """The manual's chunks as JSON lines of [chunk_id, embedding_text]; returns how many."""
    count = 0
    with target.open("w") as out:
        for page in sorted(html_dir.glob("*.html")):
            document = extract_document(page.read_text(errors="replace"), f"https://docs/{page.name}")
            for chunk in chunk_document(document):
                out.write(json.dumps([chunk.chunk_id, chunk.embedding_text]) + "\n")
                count += 1
    return count


def _rows(path: Path, copies: int) -> Iterator[tuple[str, str, str]]:
    for copy in range(copies):
        with path.open() as lines:
            for line in lines:
                chunk_id, text = json.loads(line)
                yield f"{copy:02}-{chunk_id}", "docs", text


def measure(build: str, path: Path, copies: int) -> None:
    """In this process: build once and print {"peak_kb", "seconds", "chunks"} as JSON."""
    import bm25s

    from pipeline.store.bm25 import analyze
    from pipeline.store.lexical import BM25_B, BM25_K1, LexicalIndex

    with tempfile.TemporaryDirectory(prefix="lexical-rebuild-") as directory:
        index = LexicalIndex(directory)
        before = status_kb("VmRSS")
        reset_peak()  # VmHWM restarts from the current RSS
        started = time.perf_counter()
        if build == "bm25s":
            rows = sorted(_rows(path, copies))
            retriever = bm25s.BM25(k1=BM25_K1, b=BM25_B, method="lucene")
            retriever.index([analyze(text) for _, _, text in rows], show_progress=False)
            retriever.save(directory + "/bm25s", show_progress=False)
            chunks = len(rows)
        else:
            with index.locked():
                index.rebuild(_rows(path, copies))
            chunks = index.count()
        seconds = time.perf_counter() - started
        print(json.dumps({"peak_kb": status_kb("VmHWM") - before, "seconds": seconds, "chunks": chunks}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, nargs="+", default=[1, 4], help="Sizes, as copies of the manual.")
    parser.add_argument("--html-dir", type=Path, default=HTML_DIR)
    parser.add_argument("--measure", nargs=3, metavar=("BUILD", "FILE", "COPIES"), help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.measure:
        build, path, copies = arguments.measure
        measure(build, Path(path), int(copies))
        return
    if not arguments.html_dir.is_dir():
        sys.exit(f"{arguments.html_dir} is missing: apt-get install postgresql-doc-15, or pass --html-dir")
    with tempfile.TemporaryDirectory(prefix="lexical-chunks-") as directory:
        path = Path(directory) / "chunks.jsonl"
        per_copy = write_chunks(arguments.html_dir, path)
        print(f"{per_copy:,} chunks a copy of {arguments.html_dir}")
        print(f"{'chunks':>8} {'build':>9} {'peak MB':>8} {'KB/chunk':>9} {'seconds':>8}")
        for copies in arguments.copies:
            figures = {}
            for build in ("bm25s", "streamed"):
                output = subprocess.run(
                    [sys.executable, "-m", "benchmarks.lexical_rebuild", "--measure", build, str(path), str(copies)],
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
                figures[build] = json.loads(output.strip().splitlines()[-1])
                chunks = figures[build]["chunks"]
                print(
                    f"{chunks:>8,} {build:>9} {figures[build]['peak_kb'] / 1024:>8.1f} "
                    f"{figures[build]['peak_kb'] / chunks:>9.2f} {figures[build]['seconds']:>8.1f}"
                )
            ratio = figures["streamed"]["peak_kb"] / figures["bm25s"]["peak_kb"]
            print(f"{'':>8} streamed/bm25s peak: {ratio:.2f}")


if __name__ == "__main__":
    main()
