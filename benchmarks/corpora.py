"""Labelled corpora for the quality benchmarks: an ingested data directory plus its labelled queries.

A data directory is what the pipeline leaves behind (``state.db`` and ``chroma/``):
``scripts/demo`` makes one for the demo site; ``benchmarks/ingest_postgresql.py``
makes one for the PostgreSQL 15 manual. The benchmarks only read the state store and
Chroma; they add the lexical index under the data directory when it is missing.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pipeline.demo import LABELLED_QUERIES_FILE
from pipeline.embedding import MiniLMEmbedder
from pipeline.evaluation.labels import LabelledSet, load_labelled_set, pages_in_order
from pipeline.evaluation.metrics import Evaluation, evaluate_rankings
from pipeline.store.lexical import LexicalIndex, sync_lexical
from pipeline.store.records import Query, StoredChunk
from pipeline.store.state import StateStore, sqlite_url
from pipeline.store.vectors import ChromaConnection, VectorIndex

REPO = Path(__file__).resolve().parents[1]
LABELS = {
    "demo": LABELLED_QUERIES_FILE,
    "postgresql": REPO / "benchmarks" / "labels" / "postgresql15.yaml",
    "flask": REPO / "benchmarks" / "labels" / "flask22.yaml",
}


@dataclass
class Corpus:
    name: str
    labels: LabelledSet
    store: StateStore
    vectors: VectorIndex
    lexical: LexicalIndex
    chunks: dict[str, StoredChunk]

    @property
    def queries(self) -> list[Query]:
        return [Query(query.query_id, query.query) for query in self.labels.queries]

    def evaluate(self, rankings: Mapping[str, Sequence[str]]) -> Evaluation:
        """Page-level metrics of chunk-ID rankings (best first)."""
        pages = {
            query_id: pages_in_order((self.chunks[chunk_id].url for chunk_id in ranking), self.labels.base_url)
            for query_id, ranking in rankings.items()
        }
        return evaluate_rankings(self.labels.qrels, pages)


def open_corpus(name: str, data_dir: str | Path, embedder: MiniLMEmbedder) -> Corpus:
    data_dir = Path(data_dir)
    if not (data_dir / "state.db").is_file():
        raise FileNotFoundError(f"{data_dir} holds no state.db: ingest the {name} corpus first")
    store = StateStore(sqlite_url(data_dir))
    lexical = LexicalIndex(data_dir)
    sync_lexical(store, lexical)
    chunks = {chunk.chunk_id: chunk for chunk in store.chunks.iterate()}
    if not chunks:
        raise ValueError(f"{data_dir} holds no chunks")
    return Corpus(
        name=name,
        labels=load_labelled_set(LABELS[name]),
        store=store,
        vectors=VectorIndex(ChromaConnection(data_dir=str(data_dir)), embedder.model, embedder),
        lexical=lexical,
        chunks=chunks,
    )


def ensure_demo_data(data_dir: Path) -> Path:
    """Run the offline demo into ``data_dir`` unless it was already ingested there.

    It embeds in process (``--local-embeddings``): the benchmarks search the all-MiniLM-L6-v2
    collection, which a demo through the embeddings stand-in leaves empty.
    """
    if not (data_dir / "state.db").is_file():
        env = {**os.environ, "PIPELINE_DATA_DIR": str(data_dir), "DAGSTER_HOME": str(data_dir / "dagster_home")}
        env.pop("RERANK_URL", None)
        subprocess.run(
            [sys.executable, "-m", "pipeline.cli", "demo", "--local-embeddings"],
            env=env,
            check=True,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
        )
    return data_dir


@contextmanager
def demo_data(given: Path | None) -> Iterator[Path]:
    """The demo data directory a benchmark was given, or else the offline demo run into a temporary
    one (:func:`ensure_demo_data`), removed when the block ends."""
    if given is not None:
        yield given
        return
    with tempfile.TemporaryDirectory(prefix="demo-data-", ignore_cleanup_errors=True) as scratch:
        yield ensure_demo_data(Path(scratch) / "data")
