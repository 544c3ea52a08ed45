"""The local rerank service's relevance scorer: a small linear model over cheap features. Not a cross-encoder.

Cohere's and Amazon's rerankers read query and document together; no such model ships
offline, so this scorer combines what does, each feature in [0, 1]:

- ``dense``: cosine similarity of all-MiniLM-L6-v2 embeddings of query and document
  (the model the index was built with), clipped at 0;
- ``lexical``: BM25 over the request's documents with the ``analyze`` it is given (the
  CLI passes the pipeline's own analyzer: stemming and stopwords), divided by the best
  score any document could reach for this query (every query term, unbounded frequency);
- ``coverage``: the share of distinct query terms the document contains;
- ``page_support``: documents of the pipeline start with their page's context header
  (``Title > Heading``); passages are grouped by title, and a passage's support grows
  with the number of its page's passages among the candidates (``log n / log 10``,
  capped at 1): a page that several candidates come from is more likely to answer;
- ``heading_dense``: field weighting for the header line: cosine similarity of the
  query to the document's ``Title > H2 > H3`` line embedded alone (found by the
  ``header_line`` it is given; the whole document when it has no header), so a section
  titled after the question counts beyond the share of the passage its header takes;
- ``page_mass``: relevance-weighted page support: per page, the sum over its candidates
  of how far their ``dense`` score lies above the candidates' median, divided by the
  largest such sum among the pages. Unlike ``page_support`` it does not count passages
  of a page that are off topic.

``score = Σ WEIGHTS[f] · f / Σ WEIGHTS``, in [0, 1]. The weights were fitted by
coordinate ascent on page-level nDCG@10 over the two labelled sets (the demo site and
the PostgreSQL 15 manual) with 5-fold cross-validation by query; ``benchmarks/fit_scorer.py``
refits them and prints the cross-validated figures (docs/evaluation.md). Features
that did not help under cross-validation were dropped: heading term coverage,
query bigrams found in order, a proximity window, pseudo-relevance feedback on the
query vector, the document's centrality among the candidates, hubness (mean
similarity to the document's nearest chunks in the corpus), the best dense score of
the document's page, similarity of the page title alone, similarity of query windows
to the document, BM25 with corpus-wide IDF, a passage length prior, the request
order, and BM25 as a rank percentile among the candidates (docs/evaluation.md lists
the figures).

It imports nothing from the pipeline's stages: the CLI injects how the pipeline reads
its documents (``analyze``, ``header_line``) and where its stored vectors are.

Unlike a pointwise reranker, the page features make a document's score depend on
the other documents in the request (the lexical IDF already did, slightly).

Cost: embedding documents would dominate (about 35-40 ms per 200-token document on
two cores, 2 s for 50), so document vectors come, in order, from a bounded LRU cache
keyed by text hash, from ``known_vectors`` (the local service looks the texts up
among the embeddings the pipeline computed at ingest time: the same model, computed
earlier; see :class:`pipeline.local.known_vectors.StoredEmbeddings`), and only then
from the model. The same goes for header lines: ingest embeds each distinct one once
(``pipeline.ingest.vectors.sync_header_embeddings``), since embedding 40 of them per request
would cost more than the whole budget. ``benchmarks/quality.py`` reports the time
to score 50 candidates (p50/p95).
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections import Counter, OrderedDict, defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

import numpy as np

from pipeline.embedding import MiniLMEmbedder

FEATURES = ("dense", "lexical", "coverage", "page_support", "heading_dense", "page_mass")
# Fitted by benchmarks/fit_scorer.py (see the module docstring); only ratios matter.
WEIGHTS: Mapping[str, float] = {
    "dense": 1.0,
    "lexical": 0.7,
    "coverage": 0.6,
    "page_support": 0.2,
    "heading_dense": 0.4,
    "page_mass": 0.2,
}
BM25_K1 = 1.2
BM25_B = 0.75
# A page with this many passages among the candidates gets full support.
PAGE_SUPPORT_SATURATION = 10
# 8,192 vectors of 384 float32 values take about 12.6 MB.
DEFAULT_CACHE_SIZE = 8192
_HEADER_SEPARATOR = " > "

# Text → its terms (tokenised, stopwords dropped, stemmed).
Analyzer = Callable[[str], list[str]]
# A document → the context header line it starts with, None when it has none.
HeaderLine = Callable[[str], str | None]


class KnownVectors(Protocol):
    """Document vectors computed earlier with the same model, found by text key (SHA-256 of the text)."""

    def lookup(self, texts: Mapping[bytes, str]) -> dict[bytes, np.ndarray]: ...


def text_key(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


def lexical_scores(query: str, documents: Sequence[str], analyzer: Analyzer) -> np.ndarray:
    """BM25 (k1=1.2, b=0.75) over ``documents`` as the corpus, scaled into [0, 1)."""
    query_terms = set(analyzer(query))
    document_terms = [Counter(analyzer(document)) for document in documents]
    return _bm25(query_terms, document_terms)


def _bm25(query_terms: set[str], document_terms: Sequence[Counter]) -> np.ndarray:
    scores = np.zeros(len(document_terms), dtype=np.float64)
    if not query_terms or not document_terms:
        return scores
    lengths = np.array([sum(terms.values()) for terms in document_terms], dtype=np.float64)
    average_length = lengths.mean() or 1.0
    length_norm = BM25_K1 * (1 - BM25_B + BM25_B * lengths / average_length)
    best_possible = 0.0
    for term in query_terms:
        frequencies = np.array([terms[term] for terms in document_terms], dtype=np.float64)
        containing = int(np.count_nonzero(frequencies))
        idf = math.log(1 + (len(document_terms) - containing + 0.5) / (containing + 0.5))
        scores += idf * frequencies * (BM25_K1 + 1) / (frequencies + length_norm)
        best_possible += idf * (BM25_K1 + 1)
    return scores / best_possible


def header_of(document: str, header_line: HeaderLine) -> str:
    """The ``Title > H2 > H3`` line a pipeline document starts with, else the whole text."""
    return header_line(document) or document


def page_of(document: str) -> str:
    """The page title a pipeline document starts with (``Title > H2 > H3`` then a newline), else the whole text."""
    header, newline, _ = document.partition("\n")
    return header.split(_HEADER_SEPARATOR, 1)[0] if newline else document


def page_support(documents: Sequence[str]) -> np.ndarray:
    """Per document: how many candidates come from its page, as ``log n / log 10`` capped at 1."""
    pages = [page_of(document) for document in documents]
    counts = Counter(pages)
    return np.array(
        [min(1.0, math.log(counts[page]) / math.log(PAGE_SUPPORT_SATURATION)) for page in pages], dtype=np.float64
    )


def page_mass(documents: Sequence[str], dense: np.ndarray) -> np.ndarray:
    """Per document: its page's summed ``dense`` excess over the candidates' median, over the largest page's."""
    pages = [page_of(document) for document in documents]
    excess = np.clip(dense - np.median(dense), 0.0, None)
    mass: defaultdict[str, float] = defaultdict(float)
    for page, value in zip(pages, excess, strict=True):
        mass[page] += float(value)
    largest = max(mass.values())
    return np.array([mass[page] / largest if largest > 0 else 0.0 for page in pages], dtype=np.float64)


class LocalRelevanceScorer:
    """Scores documents against a query in [0, 1]; safe to share across threads."""

    def __init__(
        self,
        embedder: MiniLMEmbedder,
        *,
        analyze: Analyzer,
        header_line: HeaderLine,
        cache_size: int = DEFAULT_CACHE_SIZE,
        known_vectors: KnownVectors | None = None,
        weights: Mapping[str, float] = WEIGHTS,
    ) -> None:
        if cache_size < 0:
            raise ValueError(f"cache_size must be non-negative, got {cache_size}")
        unknown = set(weights) - set(FEATURES)
        if unknown or any(value < 0 for value in weights.values()) or not any(weights.values()):
            raise ValueError(
                f"weights must be non-negative, not all zero, and name only {', '.join(FEATURES)}; got {dict(weights)}"
            )
        self.embedder = embedder
        self.analyze = analyze
        self.header_line = header_line
        self.known_vectors = known_vectors
        self._weights = np.array([weights.get(name, 0.0) for name in FEATURES], dtype=np.float64)
        self._cache_size = cache_size
        self._vectors: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def warm(self) -> None:
        """Load the embedding model now rather than on the first request."""
        self.embedder.embed(["warm up"])

    def seed_vectors(self, documents: Sequence[str], vectors: np.ndarray) -> None:
        """Use these precomputed all-MiniLM-L6-v2 unit vectors for these document texts."""
        if len(documents) != len(vectors):
            raise ValueError(f"{len(documents)} documents but {len(vectors)} vectors")
        self._remember(
            {
                text_key(document): np.asarray(vector, dtype=np.float32)
                for document, vector in zip(documents, vectors, strict=True)
            }
        )

    def score(self, query: str, documents: Sequence[str]) -> list[float]:
        """One score per document, in input order."""
        if not documents:
            return []
        fused = self.features(query, documents) @ self._weights / self._weights.sum()
        return [float(value) for value in np.clip(fused, 0.0, 1.0)]

    def features(self, query: str, documents: Sequence[str]) -> np.ndarray:
        """A ``(len(documents), len(FEATURES))`` array, columns in :data:`FEATURES` order."""
        query_vector = self.embedder.embed([query])[0]
        dense = _similarities(self._vectors_of(documents, self.known_vectors), query_vector)
        headers = [header_of(document, self.header_line) for document in documents]
        with_header = [
            index for index, (header, document) in enumerate(zip(headers, documents, strict=True)) if header != document
        ]
        heading_dense = dense.copy()
        if with_header:
            vectors = self._vectors_of([headers[index] for index in with_header], self.known_vectors)
            heading_dense[with_header] = _similarities(vectors, query_vector)
        query_terms = set(self.analyze(query))
        document_terms = [Counter(self.analyze(document)) for document in documents]
        lexical = _bm25(query_terms, document_terms)
        coverage = np.array(
            [len(query_terms & terms.keys()) / len(query_terms) if query_terms else 0.0 for terms in document_terms]
        )
        return np.column_stack(
            [dense, lexical, coverage, page_support(documents), heading_dense, page_mass(documents, dense)]
        )

    def dense_scores(self, query: str, documents: Sequence[str]) -> np.ndarray:
        """Cosine similarity of each document to the query, clipped to [0, 1]."""
        return _similarities(self._vectors_of(documents, self.known_vectors), self.embedder.embed([query])[0])

    def _vectors_of(self, documents: Sequence[str], known_vectors: KnownVectors | None) -> np.ndarray:
        keys = [text_key(document) for document in documents]
        found: dict[bytes, np.ndarray] = {}
        with self._lock:
            for key in keys:
                vector = self._vectors.get(key)
                if vector is not None:
                    self._vectors.move_to_end(key)
                    found[key] = vector
        missing = {key: document for key, document in zip(keys, documents, strict=True) if key not in found}
        if missing and known_vectors is not None:
            known = known_vectors.lookup(missing)
            found.update(known)
            self._remember(known)
            missing = {key: document for key, document in missing.items() if key not in known}
        if missing:
            vectors = self.embedder.embed(list(missing.values()))
            computed = dict(zip(missing, vectors, strict=True))
            found.update(computed)
            self._remember(computed)
        return np.stack([found[key] for key in keys])

    def _remember(self, vectors: dict[bytes, np.ndarray]) -> None:
        with self._lock:
            for key, vector in vectors.items():
                self._vectors[key] = vector
                self._vectors.move_to_end(key)
            while len(self._vectors) > self._cache_size:
                self._vectors.popitem(last=False)


def _similarities(vectors: np.ndarray, query_vector: np.ndarray) -> np.ndarray:
    return np.clip((vectors @ query_vector).astype(np.float64), 0.0, 1.0)
