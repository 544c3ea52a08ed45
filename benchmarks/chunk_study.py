"""Chunk representation study (issue 18): the same labelled questions over other chunk shapes.

    uv run python benchmarks/chunk_study.py --data DIR --labels demo|postgresql --cache DIR
        [--variants current,naive-window,...] [--seed 18]

``--data`` is an ingested data directory (``scripts/demo``'s ``data/``, or
``benchmarks/ingest_postgresql.py``'s); it is only read. Its extracted documents are
re-chunked under each variant (``pipeline.evaluation.chunk_variants``), every embedded
text is embedded with the local MiniLM through a vector cache in ``--cache`` keyed by the
sha256 of the exact text (seeded from the data directory's stored MiniLM vectors, so the
shipped chunker costs nothing), and each variant is ranked three ways:

- dense: exact cosine search over the variant's vectors (numpy, not Chroma's HNSW);
- BM25: the pipeline's lexical index built over the variant's embedded texts;
- hybrid: the two fused as the pipeline fuses them (``pipeline.retrieve.fuse``, default ``Fusion``).

Page-level nDCG@10, MRR@10 and Recall@50 (``pipeline.evaluation.metrics``) are printed on two
seeded halves of the questions: pick a variant on the selection half, report it on the other.
The cache is written batch by batch, so a killed run resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import closing
from pathlib import Path

import numpy as np
from corpora import LABELS

from pipeline.embedding import MODEL_NAME, MiniLMEmbedder
from pipeline.evaluation.chunk_variants import VARIANTS, VariantChunk
from pipeline.evaluation.labels import LabelledSet, load_labelled_set, pages_in_order
from pipeline.evaluation.metrics import METRICS, evaluate_rankings
from pipeline.extract import Document, Section
from pipeline.ingest.chunks import chunk_fits
from pipeline.retrieve import Fusion, fuse
from pipeline.store.chunks import text_hash
from pipeline.store.embeddings import pack_embedding, unpack_embedding
from pipeline.store.lexical import LexicalIndex
from pipeline.tables import markdown_table

K = 50
RANKINGS = ("dense", "bm25", "hybrid")


def read_only(database: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{database}?mode=ro", uri=True)


def stored_documents(data_dir: Path) -> Iterator[Document]:
    """The data directory's extracted documents, in URL order."""
    with closing(read_only(data_dir / "state.db")) as connection:
        rows = connection.execute("SELECT url, title, sections FROM pipeline_documents ORDER BY url")
        for url, title, sections in rows:
            parsed = json.loads(sections)
            yield Document(url, title, tuple(Section(tuple(s["heading_path"]), s["text"]) for s in parsed))


class VectorCache:
    """MiniLM vectors by sha256 of the exact embedded text, in one SQLite file per model."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.connection = sqlite3.connect(directory / f"{MODEL_NAME}.sqlite")
        self.connection.execute("CREATE TABLE IF NOT EXISTS vectors (text_hash TEXT PRIMARY KEY, embedding BLOB)")

    def seed(self, data_dir: Path) -> int:
        """Copy the data directory's stored MiniLM vectors in; returns how many were new."""
        before = self.count()
        with closing(read_only(data_dir / "state.db")) as source:
            rows = source.execute("SELECT text_hash, embedding FROM pipeline_vectors WHERE model = ?", (MODEL_NAME,))
            self.connection.executemany("INSERT OR IGNORE INTO vectors VALUES (?, ?)", rows)
        self.connection.commit()
        return self.count() - before

    def count(self) -> int:
        return int(self.connection.execute("SELECT count(*) FROM vectors").fetchone()[0])

    def vectors(self, texts: Sequence[str], embedder: MiniLMEmbedder) -> tuple[np.ndarray, int, float]:
        """(vectors of ``texts`` in order, texts embedded now, seconds spent embedding them)."""
        hashes = [text_hash(text) for text in texts]
        found: dict[str, np.ndarray] = {}
        unique = list(dict.fromkeys(hashes))
        for start in range(0, len(unique), 500):
            batch = unique[start : start + 500]
            marks = ",".join("?" * len(batch))
            query = f"SELECT text_hash, embedding FROM vectors WHERE text_hash IN ({marks})"
            found.update((digest, unpack_embedding(blob)) for digest, blob in self.connection.execute(query, batch))
        missing = list(
            {digest: text for digest, text in zip(hashes, texts, strict=True) if digest not in found}.items()
        )
        started = time.perf_counter()
        for positions, batch_vectors in embedder.iter_batches([text for _, text in missing]):
            rows = [(missing[p][0], pack_embedding(v)) for p, v in zip(positions, batch_vectors, strict=True)]
            self.connection.executemany("INSERT OR IGNORE INTO vectors VALUES (?, ?)", rows)
            self.connection.commit()
            found.update((digest, unpack_embedding(blob)) for digest, blob in rows)
        seconds = time.perf_counter() - started
        return np.stack([found[digest] for digest in hashes]), len(missing), seconds


def rankings(
    chunks: Sequence[VariantChunk], vectors: np.ndarray, labels: LabelledSet, embedder: MiniLMEmbedder
) -> dict[str, dict[str, list[str]]]:
    """ranking name → query ID → chunk positions (as strings), best first."""
    questions = [query.query for query in labels.queries]
    ids = [str(position) for position in range(len(chunks))]
    scores = embedder.embed_queries(questions) @ vectors.T
    depth = 2 * K  # what hybrid retrieval takes from each retriever by default
    with tempfile.TemporaryDirectory() as scratch:
        lexical = LexicalIndex(scratch)
        with lexical.locked():
            lexical.rebuild(
                (chunk_id, "study", chunk.embedding_text) for chunk_id, chunk in zip(ids, chunks, strict=True)
            )
        result: dict[str, dict[str, list[str]]] = {name: {} for name in RANKINGS}
        for query, row in zip(labels.queries, scores, strict=True):
            top = np.argsort(-row, kind="stable")[:depth]
            dense = [ids[position] for position in top]
            bm25 = [hit.chunk_id for hit in lexical.search(query.query, depth)]
            result["dense"][query.query_id] = dense[:K]
            result["bm25"][query.query_id] = bm25[:K]
            result["hybrid"][query.query_id] = [hit.chunk_id for hit in fuse(dense, bm25, K, Fusion())]
    return result


def halves(labels: LabelledSet, seed: int) -> dict[str, set[str]]:
    """The question IDs split in two seeded halves: one to choose a variant on, one to report it on."""
    ids = sorted(query.query_id for query in labels.queries)
    random.Random(seed).shuffle(ids)
    middle = len(ids) // 2
    return {"selection": set(ids[:middle]), "report": set(ids[middle:]), "all": set(ids)}


def page_metrics(
    chunks: Sequence[VariantChunk], ranked: Mapping[str, Sequence[str]], labels: LabelledSet, questions: set[str]
) -> dict[str, float]:
    pages = {
        query_id: pages_in_order((chunks[int(c)].url for c in ranking), labels.base_url)
        for query_id, ranking in ranked.items()
        if query_id in questions
    }
    qrels = {query_id: grades for query_id, grades in labels.qrels.items() if query_id in questions}
    return evaluate_rankings(qrels, pages).mean


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="an ingested data directory (only read)")
    parser.add_argument("--labels", choices=sorted(LABELS), required=True)
    parser.add_argument("--cache", type=Path, required=True, help="directory of the vector cache")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}")
    parser.add_argument("--seed", type=int, default=18, help="seed of the selection/report split")
    arguments = parser.parse_args()
    names = arguments.variants.split(",")
    unknown = [name for name in names if name not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants: {', '.join(unknown)}")
    labels = load_labelled_set(LABELS[arguments.labels])
    split = halves(labels, arguments.seed)
    embedder = MiniLMEmbedder()
    fits = chunk_fits(embedder.word_piece_counts)
    cache = VectorCache(arguments.cache)
    seeded = cache.seed(arguments.data)
    documents = list(stored_documents(arguments.data))
    print(
        f"{arguments.labels}: {len(documents)} documents, {len(labels.queries)} questions "
        f"(selection {len(split['selection'])}, report {len(split['report'])}, seed {arguments.seed}); "
        f"cache {cache.count()} vectors, {seeded} new from the data directory",
        flush=True,
    )
    rows = []
    for name in names:
        started = time.perf_counter()
        chunks = [chunk for document in documents for chunk in VARIANTS[name](document, fits)]
        chunking_seconds = time.perf_counter() - started
        vectors, embedded, seconds = cache.vectors([chunk.embedding_text for chunk in chunks], embedder)
        ranked = rankings(chunks, vectors, labels, embedder)
        print(
            f"{name}: {len(chunks)} chunks (chunked in {chunking_seconds:.0f} s), "
            f"{embedded} texts embedded in {seconds:.0f} s",
            flush=True,
        )
        for half in ("selection", "report", "all"):
            for ranking in RANKINGS:
                mean = page_metrics(chunks, ranked[ranking], labels, split[half])
                rows.append([name, str(len(chunks)), f"{embedded} / {seconds:.0f}", half, ranking, *mean.values()])
    columns = ["variant", "chunks", "embedded / s", "ranking", *METRICS]
    for half in ("selection", "report", "all"):
        table = [[*row[:3], row[4], *(f"{value:.3f}" for value in row[5:])] for row in rows if row[3] == half]
        print(
            f"\n{half} half ({len(split[half])} questions):"
            if half != "all"
            else f"\nall {len(split[half])} questions:"
        )
        print(markdown_table(columns, table, right_aligned=["chunks", "embedded / s", *METRICS]))


if __name__ == "__main__":
    main()
