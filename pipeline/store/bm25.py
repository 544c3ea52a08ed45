"""BM25 over analysed chunk texts, built one document at a time.

bm25s builds its index from every document's token list at once: each token a Python string,
then a Python int, per occurrence, several kilobytes a chunk, all alive together. A rebuild of
the lexical index then held the whole corpus that way, which is what made the worker's memory grow
with the docs site. :class:`PostingsBuilder` keeps only what BM25 needs: one (term, count) pair per
distinct term of a document in flat integer arrays (about 8 bytes a pair) and the document's
length; the weights are computed once at the end with numpy. The result is the matrix bm25s
itself stores (``method="lucene"``: Lucene's IDF and length-normalised term frequency; CSC, one
column per term, rows ascending), so a :class:`bm25s.BM25` saved from it loads and scores as if
bm25s had built it (``tests/test_bm25.py`` compares the two).
"""

from __future__ import annotations

import re
from array import array
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

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
class ScoreMatrix:
    """BM25 weights as bm25s stores them: CSC of shape (documents, terms) and the term → column map."""

    data: np.ndarray  # float32 weight of each (document, term) pair, column by column
    indices: np.ndarray  # int32 document (row) of each weight, ascending within a column
    indptr: np.ndarray  # int64 start of each column in data and indices; one more than columns
    num_docs: int
    vocabulary: dict[str, int]


class PostingsBuilder:
    """Documents' terms, added one at a time; :meth:`build` turns them into a :class:`ScoreMatrix`."""

    def __init__(self) -> None:
        self._vocabulary: dict[str, int] = {}
        self._terms = array("i")  # each document's distinct term IDs, documents one after another
        self._counts = array("i")  # how often each of those terms occurs in its document
        self._distinct = array("i")  # distinct terms per document
        self._lengths = array("i")  # tokens per document, repeats included

    def add(self, tokens: list[str]) -> None:
        vocabulary = self._vocabulary
        ids = np.fromiter(
            (vocabulary.setdefault(token, len(vocabulary)) for token in tokens), dtype=np.int32, count=len(tokens)
        )
        terms, counts = np.unique(ids, return_counts=True)
        self._terms.frombytes(terms.astype(np.int32).tobytes())
        self._counts.frombytes(counts.astype(np.int32).tobytes())
        self._distinct.append(len(terms))
        self._lengths.append(len(tokens))

    def __len__(self) -> int:
        return len(self._lengths)

    def build(self, row_of_document: np.ndarray, *, k1: float, b: float) -> ScoreMatrix:
        """The weights with document ``i`` (in the order added) as row ``row_of_document[i]``.

        Call it once: it hands the builder's buffers over as it goes. Every array here has one
        entry per (document, term) pair; they are made in place or dropped as soon as used, so the
        build peaks at about 24 bytes a pair.
        """
        num_docs, num_terms = len(self), len(self._vocabulary)
        terms = np.frombuffer(self._terms, dtype=np.int32)
        distinct = np.frombuffer(self._distinct, dtype=np.int32)
        lengths = np.frombuffer(self._lengths, dtype=np.int32)
        document_frequency = np.bincount(terms, minlength=num_terms)
        idf = np.log(1 + (num_docs - document_frequency + 0.5) / (document_frequency + 0.5)).astype(np.float32)

        # Lucene's term frequency part, tf / (tf + k1 * (1 - b + b * length / average length)), computed
        # in float64 and stored as float32, as bm25s does. With no terms there is nothing to weigh.
        average_length = float(lengths.mean()) if len(terms) else 1.0
        weights64 = np.repeat(k1 * ((1 - b) + b * lengths / average_length), distinct)
        counts = np.frombuffer(self._counts, dtype=np.int32)
        weights64 += counts
        np.divide(counts, weights64, out=weights64)
        del counts
        self._counts = array("i")
        weights64 *= idf[terms]
        weights = weights64.astype(np.float32)
        del weights64

        # Column by column, rows ascending within each (documents may have been added in any order).
        rows = np.repeat(row_of_document.astype(np.int32), distinct)
        order = np.lexsort((rows, terms))
        indptr = np.zeros(num_terms + 1, dtype=np.int64)
        np.cumsum(document_frequency, out=indptr[1:])
        data = weights[order]
        del weights
        indices = rows[order]
        return ScoreMatrix(data=data, indices=indices, indptr=indptr, num_docs=num_docs, vocabulary=self._vocabulary)
