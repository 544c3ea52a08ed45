"""Peak memory and CPU time of the local embedding model per batch setting, on chunks of the PostgreSQL manual.

    uv run python benchmarks/minilm_memory.py [--chunks 600] [--threads 2]

Chunks every 8th page of ``/usr/share/doc/postgresql-doc-15/html`` the way ingest does
(extract, then chunk with the default settings and the MiniLM window), takes ``--chunks`` of
them at random (seeded), and embeds them once per setting, each in a fresh process: rows per
batch and padded word pieces per batch (rows x the batch's widest text), then the default batch
with onnxruntime's CPU arena and memory patterns on (as before they were turned off). Prints the
process's peak resident memory (VmHWM) with the session loaded and after embedding, its resident
memory after embedding and after ``release_session``, and the wall and CPU seconds of embedding.
CPU seconds are the steadier figure on a shared machine.
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
# (rows, padded word pieces, onnxruntime arena): the plain batches of 8 used before, then capped ones,
# then the default with the arena and memory patterns on.
SETTINGS = [(8, 8 * 256, False), (4, 4 * 256, False), (2, 2 * 256, False), (16, 1024, False), (16, 512, False)]
SETTINGS += [(16, 512, True)]


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


def embed_once(rows: int, word_pieces: int, arena: bool, threads: int, texts: list[str]) -> dict[str, float]:
    from pipeline.embedding import MiniLMEmbedder

    embedder = MiniLMEmbedder(batch_size=rows, threads=threads, batch_word_pieces=word_pieces, memory_arena=arena)
    embedder.embed(["load the session"])
    _, loaded_peak = _memory_mb()
    wall, cpu = time.perf_counter(), time.process_time()
    embedder.embed(texts)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    rss, peak = _memory_mb()
    embedder.release_session()
    released, _ = _memory_mb()
    return {"loaded_peak": loaded_peak, "peak": peak, "rss": rss, "released": released, "wall": wall, "cpu": cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=600)
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads [2, as on a dyno].")
    parser.add_argument("--one", nargs=3, type=int, metavar=("ROWS", "WORD_PIECES", "ARENA"), help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.one:
        texts = json.loads(sys.stdin.read())
        rows, word_pieces, arena = arguments.one
        print(json.dumps(embed_once(rows, word_pieces, bool(arena), arguments.threads, texts)))
        return
    if not CORPUS_DIR.is_dir():
        parser.error(f"{CORPUS_DIR} is missing: install Debian's postgresql-doc-15")
    texts = json.dumps(chunk_texts(arguments.chunks))
    print(f"{len(json.loads(texts))} chunks, {arguments.threads} threads")
    print("| rows | word pieces | arena | loaded peak MB | peak MB | after MB | released MB | wall s | CPU s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for rows, word_pieces, arena in SETTINGS:
        command = [sys.executable, __file__, "--threads", str(arguments.threads), "--one"]
        command += [str(rows), str(word_pieces), str(int(arena))]
        result = json.loads(subprocess.run(command, input=texts, capture_output=True, text=True, check=True).stdout)
        print(
            f"| {rows} | {word_pieces} | {'on' if arena else 'off'} | {result['loaded_peak']:.0f} | "
            f"{result['peak']:.0f} | {result['rss']:.0f} | {result['released']:.0f} | {result['wall']:.1f} | "
            f"{result['cpu']:.1f} |"
        )


if __name__ == "__main__":
    main()
