"""Embedding models: the local all-MiniLM-L6-v2 (ONNX) and what any embedder must offer.

- :mod:`~pipeline.embedding.minilm`: all-MiniLM-L6-v2 (int8 ONNX) on the CPU, the offline default;
- :mod:`~pipeline.embedding.contract`: the Heroku Inference ``/v1/embeddings`` contract;
- :mod:`~pipeline.embedding.protocol`: the :class:`Embedder` that ingest and retrieval use.
"""

from pipeline.embedding.minilm import DEFAULT_BATCH_SIZE, DIMENSIONS, MAX_WORD_PIECES, MODEL_NAME, MiniLMEmbedder
from pipeline.embedding.protocol import Embedder

__all__ = ["DEFAULT_BATCH_SIZE", "DIMENSIONS", "MAX_WORD_PIECES", "MODEL_NAME", "Embedder", "MiniLMEmbedder"]
