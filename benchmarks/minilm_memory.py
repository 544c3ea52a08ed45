"""Peak memory and CPU time of the local embedding model per batch setting, on chunks of the PostgreSQL manual.

    uv run python benchmarks/minilm_memory.py [--chunks 600] [--threads 2]

Chunks every 8th page of ``/usr/share/doc/postgresql-doc-15/html`` the way ingest does
(extract, then chunk with the default settings and the MiniLM window), takes ``--chunks`` of
them at random (seeded), and embeds them once per setting, each in a fresh process: rows per
batch and padded word pieces per batch (rows x the batch's widest text). Prints the process's
peak resident memory (VmHWM) with the session loaded and after embedding, and the wall and CPU
seconds of embedding. CPU seconds are the steadier figure on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.ingest_postgresql import CORPUS_DIR  # noqa: E402

PAGE_STRIDE = 8
# (rows, padded word pieces): the plain batches of 8 used before, then capped ones.
SETTINGS = [(8, 8 * 256), (4, 4 * 256), (2, 2 * 256), (16, 1024), (16, 512)]


def _memory_mb() -> tuple[float, float]:
    status = Path("/proc/self/status").read_text()
    rss, peak = (int(status.split(key)[1].split()[0]) / 1024 for key in ("VmRSS:", "VmHWM:"))
    return rss, peak


def chunk_texts(count: int) -> list[str]:
    from pipeline.chunking import ChunkingConfig, chunk_document
    from pipeline.embedding import MAX_WORD_PIECES, MiniLMEmbedder
    from pipeline.extract import extract_document

    counter = MiniLMEmbedder()
    texts = []
    for page in sorted(CORPUS_DIR.glob("*.html"))[::PAGE_STRIDE]:
        document = extract_document(page.read_text(errors="replace"), "http://127.0.0.1/" + page.name)
        chunks = chunk_document(
            document, ChunkingConfig(), fits=lambda text: counter.word_piece_counts([text])[0] <= MAX_WORD_PIECES
        )
        texts.extend(chunk.embedding_text for chunk in chunks)
    return random.Random(0).sample(texts, min(count, len(texts)))


def embed_once(rows: int, word_pieces: int, threads: int, texts: list[str]) -> dict[str, float]:
    from pipeline.embedding import MiniLMEmbedder

    embedder = MiniLMEmbedder(batch_size=rows, threads=threads, batch_word_pieces=word_pieces)
    embedder.embed(["load the session"])
    _, loaded_peak = _memory_mb()
    wall, cpu = time.perf_counter(), time.process_time()
    embedder.embed(texts)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    rss, peak = _memory_mb()
    return {"loaded_peak": loaded_peak, "peak": peak, "rss": rss, "wall": wall, "cpu": cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=600)
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads [2, as on a dyno].")
    parser.add_argument("--one", nargs=2, type=int, metavar=("ROWS", "WORD_PIECES"), help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.one:
        texts = json.loads(sys.stdin.read())
        print(json.dumps(embed_once(*arguments.one, arguments.threads, texts)))
        return
    if not CORPUS_DIR.is_dir():
        parser.error(f"{CORPUS_DIR} is missing: install Debian's postgresql-doc-15")
    texts = json.dumps(chunk_texts(arguments.chunks))
    print(f"{len(json.loads(texts))} chunks, {arguments.threads} threads")
    print(f"{'rows':>4} {'word pieces':>11} {'loaded MB':>9} {'peak MB':>8} {'after MB':>8} {'wall s':>7} {'CPU s':>6}")
    for rows, word_pieces in SETTINGS:
        command = [sys.executable, __file__, "--threads", str(arguments.threads), "--one", str(rows), str(word_pieces)]
        result = json.loads(subprocess.run(command, input=texts, capture_output=True, text=True, check=True).stdout)
        print(
            f"{rows:4} {word_pieces:11} {result['loaded_peak']:9.0f} {result['peak']:8.0f} {result['rss']:8.0f} "
            f"{result['wall']:7.1f} {result['cpu']:6.1f}"
        )


if __name__ == "__main__":
    main()
