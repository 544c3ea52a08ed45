"""The lexical (BM25) index over the stored chunks, persisted beside Chroma in the data directory.

Like Chroma, it is a derived index: :func:`sync_lexical` compares its chunk IDs with the
state store's and, when they differ (a refresh added or deleted chunks, or the
directory was wiped on a Heroku dyno restart), rebuilds it from the stored chunk
texts. A chunk ID hashes the chunk's content, so equal ID sets mean equal contents.

bm25s keeps BM25 as a sparse document-term matrix whose weights depend on corpus-wide
statistics (IDF, average length), so adding or removing one chunk changes every
column: there is no exact in-place update. A rebuild costs about two seconds for the
12,700 chunks of the PostgreSQL manual (``benchmarks/quality.py`` measures it), next to
10-15 minutes of embedding them, so each refresh that changed anything rebuilds. The
matrix is built by :mod:`pipeline.store.bm25` from the chunks as the store streams them,
and saved in bm25s's format, which loads and searches it.

On disk: ``<data_dir>/lexical/CURRENT`` names the live ``index-<digest>/`` directory
(bm25s files plus ``chunks.json``). A rebuild writes a new directory, then replaces
``CURRENT`` atomically, so a reader never sees half an index; ``lexical.lock``
serialises rebuilds between processes.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.process_memory import release_free_memory
from pipeline.store.bm25 import PostingsBuilder, ScoreMatrix, analyze
from pipeline.store.state import StateStore

# Bump when analysis (tokenising, stemming, stopwords) or BM25 parameters change.
ANALYZER_VERSION = "1"
BM25_K1 = 1.2
BM25_B = 0.75
LEXICAL_DIR = "lexical"
_CURRENT = "CURRENT"
_CHUNKS_FILE = "chunks.json"


@dataclass(frozen=True)
class LexicalHit:
    chunk_id: str
    score: float  # BM25, unbounded; only comparable within one query


@dataclass(frozen=True)
class LexicalSyncReport:
    added: int
    removed: int
    total: int
    rebuilt: bool
    seconds: float

    def metadata(self) -> dict[str, int | float | bool]:
        return {
            "chunks_added": self.added,
            "chunks_removed": self.removed,
            "chunks_total_all_sources": self.total,
            "rebuilt": self.rebuilt,
            "rebuild_seconds": round(self.seconds, 2),
        }


class LexicalIndex:
    """BM25 over chunk ``embedding_text`` (title and heading path included), loaded from ``directory``."""

    def __init__(self, data_dir: str | Path) -> None:
        self.directory = Path(data_dir) / LEXICAL_DIR
        self._loaded_name: str | None = None
        self._retriever = None
        self._chunk_ids: list[str] = []
        self._sources: list[str] = []

    def __repr__(self) -> str:
        return f"LexicalIndex({str(self.directory)!r})"

    def ids(self, source: str | None = None) -> set[str]:
        self._refresh()
        if source is None:
            return set(self._chunk_ids)
        return {chunk_id for chunk_id, owner in zip(self._chunk_ids, self._sources, strict=True) if owner == source}

    def sources(self) -> dict[str, str]:
        """chunk_id → the source each indexed chunk is listed under."""
        self._refresh()
        return dict(zip(self._chunk_ids, self._sources, strict=True))

    def count(self) -> int:
        self._refresh()
        return len(self._chunk_ids)

    def search(self, query: str, k: int) -> list[LexicalHit]:
        """The ``k`` best chunks by BM25, best first; chunks sharing no term with the query are left out."""
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        self._refresh()
        retriever = self._loaded_retriever()
        if retriever is None:
            return []
        token_ids = retriever.get_tokens_ids(analyze(query))
        if not token_ids:
            return []
        scores = retriever.get_scores(token_ids)
        k = min(k, int(np.count_nonzero(scores)))
        if k == 0:
            return []
        cut = scores[np.argpartition(-scores, k - 1)[k - 1]]
        # Ties broken by chunk ID so results do not depend on index order, at the cut too: every chunk
        # scoring the k-th best score competes for the last places, not those argpartition happened to pick.
        tied_or_better = np.flatnonzero(scores >= cut)
        top = sorted(tied_or_better, key=lambda position: (-scores[position], self._chunk_ids[position]))[:k]
        return [LexicalHit(self._chunk_ids[position], float(scores[position])) for position in top]

    def rebuild(self, chunks: Iterable[tuple[str, str, str]]) -> None:
        """Replace the index with ``(chunk_id, source, text)`` rows, atomically; call it under :meth:`locked`.

        Each row is analysed as it arrives and only its term counts are kept, so a rebuild holds
        neither the texts nor their token lists (the store hands the rows over a batch at a time).
        """
        # The listing loaded so far describes the index being replaced.
        self._loaded_name, self._retriever, self._chunk_ids, self._sources = None, None, [], []
        postings = PostingsBuilder()
        chunk_ids: list[str] = []
        sources: list[str] = []
        names: dict[str, str] = {}  # one string per source name, not one per chunk
        for chunk_id, source, text in chunks:
            chunk_ids.append(chunk_id)
            sources.append(names.setdefault(source, source))
            postings.add(analyze(text))
        order = sorted(range(len(chunk_ids)), key=chunk_ids.__getitem__)
        row_of_chunk = np.empty(len(order), dtype=np.int32)
        row_of_chunk[order] = np.arange(len(order), dtype=np.int32)
        chunk_ids = [chunk_ids[position] for position in order]
        sources = [sources[position] for position in order]
        del order
        self.directory.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256(json.dumps([ANALYZER_VERSION, BM25_K1, BM25_B]).encode())
        for chunk_id, source in zip(chunk_ids, sources, strict=True):
            # Owners included: a source taking over another's chunks gets a new listing.
            digest.update(f"{chunk_id}\0{source}\n".encode())
        name = f"index-{digest.hexdigest()[:16]}"
        target = self.directory / name
        # Rebuilds are serialised (``locked``), so any staging directory left is from a crashed one.
        for leftover in self.directory.glob(".staging-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        if not target.is_dir():
            staging = self.directory / f".staging-{name}-{os.getpid()}"
            staging.mkdir()
            if chunk_ids:
                _save_in_bm25s_format(postings.build(row_of_chunk, k1=BM25_K1, b=BM25_B), staging)
            with (staging / _CHUNKS_FILE).open("w") as listing:
                json.dump({"chunk_ids": chunk_ids, "sources": sources}, listing)
            staging.rename(target)
        pointer = self.directory / f".{_CURRENT}.{os.getpid()}"
        pointer.write_text(name)
        pointer.replace(self.directory / _CURRENT)
        for stale in self.directory.glob("index-*"):
            if stale.name != name:
                shutil.rmtree(stale, ignore_errors=True)

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the index's rebuild lock (between processes sharing the data directory)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / "lexical.lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _refresh(self) -> None:
        """Load the live index's chunk listing if it changed on disk since it was last loaded; the BM25
        matrix only when a search needs it (:meth:`_loaded_retriever`), so ingest, which lists and
        counts, never holds it."""
        try:
            name = (self.directory / _CURRENT).read_text().strip()
        except FileNotFoundError:
            name = None
        if name is not None and not (self.directory / name / _CHUNKS_FILE).is_file():
            name = None  # the directory was wiped under the pointer
        if name == self._loaded_name:
            return
        self._retriever, self._chunk_ids, self._sources = None, [], []
        self._loaded_name = name
        if name is None:
            return
        listing = json.loads((self.directory / name / _CHUNKS_FILE).read_text())
        self._chunk_ids, self._sources = listing["chunk_ids"], listing["sources"]

    def _loaded_retriever(self):
        """The BM25 matrix of the listing :meth:`_refresh` loaded, loaded once; None for an empty index."""
        if self._retriever is None and self._loaded_name is not None and self._chunk_ids:
            import bm25s

            self._retriever = bm25s.BM25.load(str(self.directory / self._loaded_name), show_progress=False)
        return self._retriever


def _save_in_bm25s_format(matrix: ScoreMatrix, directory: Path) -> None:
    """Save ``matrix`` as bm25s saves an index it built with ``method="lucene"``, for ``BM25.load``."""
    import bm25s

    retriever = bm25s.BM25(k1=BM25_K1, b=BM25_B, method="lucene")
    retriever.scores = {
        "data": matrix.data,
        "indices": matrix.indices,
        "indptr": matrix.indptr,
        "num_docs": matrix.num_docs,
    }
    # bm25s's index() appends the empty token last; a query of no known terms scores nothing.
    retriever.vocab_dict = {**matrix.vocabulary, "": len(matrix.vocabulary)}
    retriever.nonoccurrence_array = None  # Lucene's BM25 has no non-occurrence term
    retriever.save(str(directory), show_progress=False)


def sync_lexical(store: StateStore, index: LexicalIndex) -> LexicalSyncReport:
    """Make the lexical index hold exactly the stored chunks (every source) under their owners;
    rebuild only when they differ (a source that took over an orphaned one's pages changes owners only)."""
    with index.locked():
        started = time.perf_counter()
        stored = store.chunks.sources()
        indexed = index.sources()
        added, removed = len(stored.keys() - indexed.keys()), len(indexed.keys() - stored.keys())
        moved = any(indexed.get(chunk_id, source) != source for chunk_id, source in stored.items())
        rebuilt = bool(added or removed or moved)
        del stored, indexed  # a listing each of every chunk: not to be held through the rebuild
        if rebuilt:
            index.rebuild(store.chunks.iter_index_rows())
            # The rebuild's arrays are freed; give their pages back rather than keep them for the run.
            release_free_memory()
        return LexicalSyncReport(
            added=added, removed=removed, total=index.count(), rebuilt=rebuilt, seconds=time.perf_counter() - started
        )
