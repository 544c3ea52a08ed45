"""Facts about the Heroku Inference ``/v1/chat/completions`` endpoint shared by the client and the local stand-in.

Source: ``shared/reference/heroku-inference-embeddings-and-chat.md`` (Heroku's /v1/chat/completions
reference, its OpenAI-compatibility page and the rate-limit table).
"""

from __future__ import annotations

CHAT_COMPLETIONS_PATH = "/v1/chat/completions"

# Published per-model limits over a sliding minute.
MODEL_REQUESTS_PER_MINUTE: dict[str, int] = {
    "claude-4-5-sonnet": 150,
    "claude-4-sonnet": 150,
    "claude-3-7-sonnet": 150,
    "claude-3-5-haiku": 200,
    "claude-3-haiku": 250,
    "gpt-oss-120b": 200,
    "nova-pro": 150,
    "nova-lite": 150,
}
MODEL_TOKENS_PER_MINUTE: dict[str, int] = {model: 800_000 for model in MODEL_REQUESTS_PER_MINUTE}
# claude-4-5-haiku is the model Heroku's docs attach as INFERENCE, but the rate-limit table has no
# row for it: it is paced at the fallback limits.
KNOWN_MODELS: tuple[str, ...] = ("claude-4-5-haiku", *MODEL_REQUESTS_PER_MINUTE)
# A model without a published limit gets the lowest ones: safer to under-use than to collect 429s.
FALLBACK_REQUESTS_PER_MINUTE = min(MODEL_REQUESTS_PER_MINUTE.values())
FALLBACK_TOKENS_PER_MINUTE = min(MODEL_TOKENS_PER_MINUTE.values())
RATE_WINDOW_SECONDS = 60.0

ROLES: tuple[str, ...] = ("system", "user", "assistant", "tool")
# The body fields Heroku's OpenAI-compatible subset accepts; ``max_tokens`` is the older name of
# ``max_completion_tokens``, and Heroku's own examples still send it.
BODY_FIELDS = frozenset(
    {
        "model",
        "messages",
        "max_completion_tokens",
        "max_tokens",
        "temperature",
        "top_p",
        "stop",
        "stream",
        "tools",
        "tool_choice",
    }
)
# What a request that leaves them out gets.
DEFAULT_MAX_COMPLETION_TOKENS = 4096
DEFAULT_TEMPERATURE = 1.0
# OpenAI's range; a model may accept less (Claude's is 0 to 1).
MAX_TEMPERATURE = 2.0


def requests_per_minute_for(model: str) -> int:
    return MODEL_REQUESTS_PER_MINUTE.get(model, FALLBACK_REQUESTS_PER_MINUTE)


def tokens_per_minute_for(model: str) -> int:
    return MODEL_TOKENS_PER_MINUTE.get(model, FALLBACK_TOKENS_PER_MINUTE)
