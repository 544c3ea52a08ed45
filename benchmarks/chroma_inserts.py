"""What one more vector costs an embedded Chroma collection as it grows: the part of a cold ingest that is not linear.

    uv run python benchmarks/chroma_inserts.py [--vectors 60000] [--dimensions 1024] [--step 5120]
        [--ef-construction 100]

Upserts ``--vectors`` seeded random unit vectors of ``--dimensions`` numbers, with an 800-character
document and two metadata fields each (the shape ``vector_index`` upserts), into a fresh
``PersistentClient`` collection (cosine space, HNSW ``ef_construction`` as given, Chroma's default
100 unless told, and the pipeline's ``ef_search``), 256 at a time as
``vector_index`` does, and prints the seconds each ``--step`` vectors took and their ratio to the
first step's. Every figure comes from the same run, so the ratios hold on a noisy machine.

HNSW inserts search the graph for each new vector's neighbours, and the vectors they compare
against stop fitting the CPU caches as the index grows, so each insert costs more the larger the
collection: the cold ingest's ``vector_index`` step grows faster than the corpus (docs/scaling.md).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import chromadb
import numpy as np

from pipeline.store.vectors import HNSW_EF_SEARCH

BATCH = 256


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vectors", type=int, default=60_000)
    parser.add_argument("--dimensions", type=int, default=1024)
    parser.add_argument("--step", type=int, default=5120, help="Vectors per printed row (a multiple of 256).")
    parser.add_argument("--ef-construction", type=int, default=100, help="HNSW ef_construction [Chroma's 100].")
    arguments = parser.parse_args()
    rng = np.random.default_rng(16)
    with tempfile.TemporaryDirectory(prefix="chroma-inserts-") as directory:
        client = chromadb.PersistentClient(path=directory)
        hnsw = {"space": "cosine", "ef_construction": arguments.ef_construction, "ef_search": HNSW_EF_SEARCH}
        collection = client.create_collection("inserts", embedding_function=None, configuration={"hnsw": hnsw})
        print(
            f"{arguments.dimensions} dimensions, {BATCH} vectors an upsert, ef_construction {arguments.ef_construction}"
        )
        print("| vectors in the collection | seconds for the last step | ratio to the first step |")
        print("|---|---|---|")
        first, started = None, time.perf_counter()
        for start in range(0, arguments.vectors, BATCH):
            vectors = rng.standard_normal((BATCH, arguments.dimensions)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            collection.upsert(
                ids=[f"chunk-{number}" for number in range(start, start + BATCH)],
                embeddings=vectors,
                documents=["x" * 800] * BATCH,
                metadatas=[{"source": "synthetic", "url": f"https://docs.example/{start}"}] * BATCH,
            )
            done = start + BATCH
            if done % arguments.step == 0:
                seconds = time.perf_counter() - started
                first = first or seconds
                print(f"| {done:,} | {seconds:.1f} | {seconds / first:.2f} |", flush=True)
                started = time.perf_counter()


if __name__ == "__main__":
    main()
