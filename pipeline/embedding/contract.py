"""Facts about the Heroku Inference ``/v1/embeddings`` endpoint shared by the client and the local service.

Source: ``shared/reference/heroku-inference-embeddings-and-chat.md`` (Heroku's /v1/embeddings
reference and rate-limit table), summarised in docs/embeddings.md.
"""

from __future__ import annotations

EMBEDDINGS_PATH = "/v1/embeddings"

# Published per-model limits over a sliding minute.
MODEL_REQUESTS_PER_MINUTE: dict[str, int] = {"cohere-embed-multilingual": 500}
MODEL_TOKENS_PER_MINUTE: dict[str, int] = {"cohere-embed-multilingual": 800_000}
KNOWN_MODELS: tuple[str, ...] = tuple(MODEL_REQUESTS_PER_MINUTE)
MODEL_DIMENSIONS: dict[str, int] = {"cohere-embed-multilingual": 1024}
RATE_WINDOW_SECONDS = 60.0

# Per request: at most this many inputs, each at most this many characters (a hard cap: longer is a 400).
MAX_INPUTS_PER_REQUEST = 96
MAX_INPUT_CHARACTERS = 2048
# Recommended (not enforced by a 400) input length in the model's own tokens.
RECOMMENDED_INPUT_TOKENS = 512

# input_type: passages are indexed as documents, questions searched as queries; mixing them up
# silently hurts retrieval.
SEARCH_DOCUMENT = "search_document"
SEARCH_QUERY = "search_query"
INPUT_TYPES: tuple[str, ...] = (SEARCH_DOCUMENT, SEARCH_QUERY, "classification", "clustering")
ENCODING_FORMATS: tuple[str, ...] = ("raw", "base64")
# Only float vectors: the quality of int8 and binary vectors cannot be measured offline.
EMBEDDING_TYPE = "float"
