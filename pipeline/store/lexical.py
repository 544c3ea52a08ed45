"""The lexical (BM25) index over the stored chunks, persisted beside Chroma in the data directory.

Like Chroma, it is a derived index: :func:`sync_lexical` compares its chunk IDs with the
state store's and, when they differ (a refresh added or deleted chunks, or the
directory was wiped on a Heroku dyno restart), rebuilds it from the stored chunk
texts. A chunk ID hashes the chunk's content, so equal ID sets mean equal contents.

bm25s keeps BM25 as a sparse document-term matrix whose weights depend on corpus-wide
statistics (IDF, average length), so adding or removing one chunk changes every
column: there is no exact in-place update. A rebuild costs about two seconds for the
12,700 chunks of the PostgreSQL manual (``benchmarks/quality.py`` measures it), next to
10-15 minutes of embedding them, so each refresh that changed anything rebuilds.

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
import re
import shutil
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from pipeline.store.state import StateStore

# Bump when analysis (tokenising, stemming, stopwords) or BM25 parameters change.
ANALYZER_VERSION = "1"
BM25_K1 = 1.2
BM25_B = 0.75
LEXICAL_DIR = "lexical"
_CURRENT = "CURRENT"
_CHUNKS_FILE = "chunks.json"

# Runs of letters, digits and underscores keep identifiers such as pg_hba or
# max_wal_size whole; dots and dashes split (pg_hba.conf → pg_hba, conf).
_WORD = re.compile(r"\w+")


@lru_cache(maxsize=1)
def _stemmer():
    import Stemmer

    return Stemmer.Stemmer("english")


@lru_cache(maxsize=1)
def _stopwords() -> frozenset[str]:
    from bm25s.stopwords import STOPWORDS_EN

    return frozenset(STOPWORDS_EN)


def analyze(text: str) -> list[str]:
    """Lower-cased words without English stopwords, Snowball-stemmed (``connections`` → ``connect``)."""
    stopwords = _stopwords()
    words = [word for word in _WORD.findall(text.lower()) if word not in stopwords]
    return _stemmer().stemWords(words)


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
        if self._retriever is None:
            return []
        token_ids = self._retriever.get_tokens_ids(analyze(query))
        if not token_ids:
            return []
        scores = self._retriever.get_scores(token_ids)
        k = min(k, int(np.count_nonzero(scores)))
        if k == 0:
            return []
        top = np.argpartition(-scores, k - 1)[:k]
        # Ties broken by chunk ID so results do not depend on index order.
        top = sorted(top, key=lambda position: (-scores[position], self._chunk_ids[position]))
        return [LexicalHit(self._chunk_ids[position], float(scores[position])) for position in top]

    def rebuild(self, chunks: Iterable[tuple[str, str, str]]) -> None:
        """Replace the index with ``(chunk_id, source, text)`` rows, atomically; call it under :meth:`locked`."""
        import bm25s

        rows = sorted(chunks)
        self.directory.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256(
            # Owners included: a source taking over another's chunks gets a new listing.
            json.dumps([ANALYZER_VERSION, BM25_K1, BM25_B, [row[:2] for row in rows]]).encode()
        ).hexdigest()[:16]
        name = f"index-{digest}"
        target = self.directory / name
        # Rebuilds are serialised (``locked``), so any staging directory left is from a crashed one.
        for leftover in self.directory.glob(".staging-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        if not target.is_dir():
            staging = self.directory / f".staging-{name}-{os.getpid()}"
            staging.mkdir()
            if rows:
                retriever = bm25s.BM25(k1=BM25_K1, b=BM25_B, method="lucene")
                retriever.index([analyze(text) for _, _, text in rows], show_progress=False)
                retriever.save(str(staging), show_progress=False)
            (staging / _CHUNKS_FILE).write_text(
                json.dumps({"chunk_ids": [row[0] for row in rows], "sources": [row[1] for row in rows]})
            )
            staging.rename(target)
        pointer = self.directory / f".{_CURRENT}.{os.getpid()}"
        pointer.write_text(name)
        pointer.replace(self.directory / _CURRENT)
        for stale in self.directory.glob("index-*"):
            if stale.name != name:
                shutil.rmtree(stale, ignore_errors=True)
        self._loaded_name = None

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
        """Load the live index if it changed on disk since it was last loaded."""
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
        import bm25s

        path = self.directory / name
        listing = json.loads((path / _CHUNKS_FILE).read_text())
        self._chunk_ids, self._sources = listing["chunk_ids"], listing["sources"]
        if self._chunk_ids:
            self._retriever = bm25s.BM25.load(str(path), show_progress=False)


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
        if rebuilt:
            index.rebuild((chunk.chunk_id, chunk.source, chunk.embedding_text) for chunk in store.chunks.iterate())
        return LexicalSyncReport(
            added=added, removed=removed, total=index.count(), rebuilt=rebuilt, seconds=time.perf_counter() - started
        )
