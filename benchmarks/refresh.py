"""A refresh where nothing changed, on the PostgreSQL 15 manual: ours against LangChain's indexing API.

    apt-get install -y postgresql-doc-15
    uv sync --group bench          # LangChain, pinned in pyproject.toml's bench group
    uv run --group bench python -m benchmarks.refresh DATA_DIR [--refreshes 5]

1. Cold ingest, once per DATA_DIR: the manual's 1,169 pages served on 127.0.0.1:18901 from a
   process of their own (``benchmarks/loopback.py``: HTTP/1.1 keep-alive, ETag and
   Last-Modified, 304s), one source, the real ``ingest_source`` job in this process on an
   ephemeral instance, SQLite state and local Chroma in DATA_DIR, embeddings local (the ONNX
   MiniLM model in the run process). Its time is kept in ``DATA_DIR/cold.json``: a later run
   on the same DATA_DIR reuses the ingest and says when its cold time was measured.
2. The peer's cold index (not timed): LangChain's ``index()`` with ``SQLRecordManager``
   (``langchain_classic.indexes``, a SQLite file in DATA_DIR, made anew each run) and
   ``InMemoryVectorStore``, ``cleanup="full"``. Its documents are what a LangChain user gets
   from the same files: a loader like ``BSHTMLLoader`` (BeautifulSoup text and title, read from
   disk, no HTTP at all) and ``RecursiveCharacterTextSplitter`` with our budget, 200 cl100k
   tokens with 20 of overlap. This one index stores placeholder vectors instead of embedding
   its chunks (about 25 minutes that nothing measures); the embeddings used afterwards are the
   same MiniLM model as ours behind a LangChain ``Embeddings``, so every text the peer embeds
   during a timed refresh costs what it costs us.
3. ``--refreshes`` rounds, each one no-change refresh of ours (the whole job: crawl
   revalidating every page, extract, chunk, vectors, lexical index, every check) and then the
   peer's (load and split every page, then ``index()``). Figures: medians, per page, and the
   ratio ours / peer within the run, and ours against the cold ingest.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import numpy as np

from benchmarks.ingest_runs import IngestRun, embedding_mode, ingest_job, write_sources
from benchmarks.loopback import directory_site, serve_in_child
from benchmarks.step_memory import peak_rss_mb

CORPUS_DIR = Path("/usr/share/doc/postgresql-doc-15/html")
PORT = 18901
SOURCE = "postgresql"


@dataclass(frozen=True)
class PeerRefresh:
    load_seconds: float
    index_seconds: float
    result: dict[str, int]  # index()'s counts: num_added, num_updated, num_skipped, num_deleted
    texts_embedded: int

    @property
    def seconds(self) -> float:
        return self.load_seconds + self.index_seconds


class Peer:
    """LangChain's indexing API over the same pages (see the module docstring)."""

    def __init__(self, data_dir: Path, urls: list[str], base: str) -> None:
        from langchain_classic.indexes import SQLRecordManager
        from langchain_core.embeddings import Embeddings
        from langchain_core.vectorstores import InMemoryVectorStore
        from langchain_text_splitters import RecursiveCharacterTextSplitter

        from pipeline.embedding import DIMENSIONS, MiniLMEmbedder
        from pipeline.tokens import count_tokens

        peer = self

        class MiniLMEmbeddings(Embeddings):
            """Our MiniLM model as LangChain embeddings; placeholders while ``peer.placeholders``."""

            def __init__(self) -> None:
                self.model = MiniLMEmbedder()
                self.texts_embedded = 0

            def embed_documents(self, texts: list[str]) -> list[list[float]]:
                if peer.placeholders:
                    return np.ones((len(texts), DIMENSIONS), dtype=np.float32).tolist()
                self.texts_embedded += len(texts)
                return self.model.embed(texts).tolist()

            def embed_query(self, text: str) -> list[float]:
                return self.embed_documents([text])[0]

        records = data_dir / "langchain_records.db"
        records.unlink(missing_ok=True)
        self.record_manager = SQLRecordManager(SOURCE, db_url=f"sqlite:///{records}")
        self.record_manager.create_schema()
        self.embeddings = MiniLMEmbeddings()
        self.vector_store = InMemoryVectorStore(self.embeddings)
        self.splitter = RecursiveCharacterTextSplitter(chunk_size=200, chunk_overlap=20, length_function=count_tokens)
        self.files = [(url, CORPUS_DIR / url.removeprefix(base).lstrip("/")) for url in urls]
        self.placeholders = True

    def load(self) -> list:
        """Every page read and split, as ``BSHTMLLoader`` and ``RecursiveCharacterTextSplitter`` do."""
        from bs4 import BeautifulSoup
        from langchain_core.documents import Document

        documents = []
        for url, path in self.files:
            soup = BeautifulSoup(path.read_bytes(), "lxml")
            title = soup.title.string if soup.title and soup.title.string else ""
            documents.append(Document(soup.get_text(), metadata={"source": url, "title": title}))
        return self.splitter.split_documents(documents)

    def refresh(self) -> PeerRefresh:
        from langchain_core.indexing import index

        embedded_before = self.embeddings.texts_embedded
        started = time.perf_counter()
        documents = self.load()
        loaded = time.perf_counter()
        result = index(documents, self.record_manager, self.vector_store, cleanup="full", source_id_key="source")
        done = time.perf_counter()
        return PeerRefresh(
            loaded - started, done - loaded, dict(result), self.embeddings.texts_embedded - embedded_before
        )


def _cold(data_dir: Path, run: object, mode: str, commit: str) -> dict:
    cold_file = data_dir / "cold.json"
    if cold_file.exists():
        cold = json.loads(cold_file.read_text())
        print(f"reusing the ingest in {data_dir}: cold ingest measured {cold['measured_at']} at {cold['commit']}")
        print(f"refreshes measured at {commit}")
        return cold
    ingest: IngestRun = run()  # type: ignore[operator]
    crawl, vectors = ingest.metadata["crawled_pages"], ingest.metadata["vector_index"]
    cold = {
        "seconds": ingest.seconds,
        "pages": crawl["pages_fetched"],
        "chunks": vectors["chunks_embedded"],
        "embeddings": mode,
        "steps": ingest.steps,
        "peak_rss_mb": peak_rss_mb(),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": commit,
    }
    cold_file.write_text(json.dumps(cold, indent=1))
    return cold


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data_dir", type=Path, help="A new directory, or one an earlier run of this script left.")
    parser.add_argument("--refreshes", type=int, default=5, help="Rounds of one refresh of ours and one of the peer.")
    parser.add_argument("--max-pages", type=int, default=2000, help="Cap the crawl (a quick trial of the script).")
    arguments = parser.parse_args()
    data_dir = arguments.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    os.environ["PIPELINE_DATA_DIR"] = str(data_dir)
    os.environ["PIPELINE_SOURCES"] = str(data_dir / "sources.yaml")
    os.environ.pop("DATABASE_URL", None)
    mode = embedding_mode("local")
    # The code this process runs: read now, not once the cold ingest is over.
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()

    from pipeline.store.state import StateStore, sqlite_url

    with serve_in_child(partial(directory_site, CORPUS_DIR), port=PORT) as base:
        write_sources(
            data_dir / "sources.yaml", SOURCE, base + "/index.html", max_pages=arguments.max_pages, max_depth=10
        )
        with ingest_job(SOURCE) as run:
            cold = _cold(data_dir, run, mode, commit)
            pages = cold["pages"]
            print(
                f"cold ingest, embeddings {cold['embeddings']}: {cold['seconds']:.1f} s, {pages} pages, "
                f"{cold['chunks']} chunks, peak RSS {cold['peak_rss_mb']:.0f} MB; steps {cold['steps']}"
            )
            urls = sorted(StateStore(sqlite_url(data_dir)).pages.known(SOURCE))
            peer = Peer(data_dir, urls, base)
            started = time.perf_counter()
            setup = peer.refresh()
            peer.placeholders = False
            print(
                f"peer cold index (placeholder vectors, not timed): {time.perf_counter() - started:.1f} s, "
                f"{setup.result}"
            )

            ours: list[IngestRun] = []
            theirs: list[PeerRefresh] = []
            for round_number in range(1, arguments.refreshes + 1):
                refresh = run()
                crawl = refresh.metadata["crawled_pages"]
                assert crawl["pages_not_modified"] == pages and refresh.metadata["vector_index"]["chunks_embedded"] == 0
                ours.append(refresh)
                theirs.append(peer.refresh())
                print(f"round {round_number}: ours {refresh.line(pages)}")
                peer_refresh = theirs[-1]
                print(
                    f"  peer {peer_refresh.seconds:.2f} s (load and split {peer_refresh.load_seconds:.2f} s, index() "
                    f"{peer_refresh.index_seconds:.2f} s), {peer_refresh.result}, "
                    f"texts embedded {peer_refresh.texts_embedded}"
                )

    ours_median = statistics.median(refresh.seconds for refresh in ours)
    peer_median = statistics.median(refresh.seconds for refresh in theirs)
    steps = {step: statistics.median(refresh.steps[step] for refresh in ours) for step in ours[0].steps}
    print(f"\nmedians over {len(ours)} rounds, {pages} pages:")
    print(
        f"  ours: {ours_median:.2f} s = {1000 * ours_median / pages:.2f} ms/page = "
        f"{100 * ours_median / cold['seconds']:.3f} % of the cold ingest"
    )
    print("    steps: " + ", ".join(f"{step} {seconds:.2f} s" for step, seconds in steps.items()))
    load = statistics.median(refresh.load_seconds for refresh in theirs)
    indexing = statistics.median(refresh.index_seconds for refresh in theirs)
    embedded = statistics.median(refresh.texts_embedded for refresh in theirs)
    print(
        f"  peer: {peer_median:.2f} s = {1000 * peer_median / pages:.2f} ms/page (load and split {load:.2f} s, "
        f"index() {indexing:.2f} s, texts embedded {embedded:.0f})"
    )
    print(f"  ours / peer: {ours_median / peer_median:.3f}; peak RSS of this process {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
