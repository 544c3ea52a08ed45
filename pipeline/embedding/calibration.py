"""How many tokens an embeddings request will count against the model's tokens per minute, before it is sent.

The server counts with its own tokenizer (Cohere's, for cohere-embed-multilingual), which this
process does not have. So a request is estimated from its characters at a ratio of tokens per
character learnt from the server's own counts (``usage.total_tokens`` of each answer):
:class:`TokenCalibration` keeps the characters and counted tokens of the last
:data:`RECENT_REQUESTS` answers and estimates with their ratio plus :data:`SAFETY_MARGIN`.

Before any count, a request is estimated at :data:`PRIOR_TOKENS_PER_CHARACTER`, one token per
character: more than any text of words costs (English runs at about a quarter of that, code and
most scripts well under one), so the first request cannot overrun the budget. The embedder
sends that request alone and waits for its count before it sends more; the pacing ledger then
replaces the estimate by the count (:meth:`pipeline.inference.RequestRateLimiter.settle`), so an
estimate's error lasts only as long as its request is in flight.
"""

from __future__ import annotations

import math
import threading
from collections import deque

PRIOR_TOKENS_PER_CHARACTER = 1.0
# The estimate's headroom over the recent ratio: a batch of code counts more tokens per character
# than one of prose. Pacing reaches at most pacing share / (1 + margin) of the tokens per minute.
SAFETY_MARGIN = 0.03
RECENT_REQUESTS = 32


class TokenCalibration:
    """Token estimates from characters, calibrated by the counts the server reports; thread-safe."""

    def __init__(self, recent: int = RECENT_REQUESTS, margin: float = SAFETY_MARGIN) -> None:
        if recent < 1:
            raise ValueError(f"recent must be at least 1, got {recent}")
        if margin < 0:
            raise ValueError(f"margin must be non-negative, got {margin}")
        self.margin = margin
        # (characters sent, tokens counted) per answer that reported a count, oldest first.
        self._samples: deque[tuple[int, int]] = deque(maxlen=recent)
        self._lock = threading.Lock()

    @property
    def calibrated(self) -> bool:
        """Whether any answer has reported a count yet."""
        with self._lock:
            return bool(self._samples)

    @property
    def tokens_per_character(self) -> float:
        """The ratio estimates use: the recent answers' counted tokens per character sent, or the prior."""
        with self._lock:
            characters = sum(sent for sent, _ in self._samples)
            counted = sum(count for _, count in self._samples)
        if not characters:
            return PRIOR_TOKENS_PER_CHARACTER
        return counted / characters

    def estimate(self, characters: int) -> int:
        """Tokens a request of ``characters`` characters is expected to count, rounded up."""
        margin = self.margin if self.calibrated else 0.0
        return math.ceil(characters * self.tokens_per_character * (1 + margin))

    def record(self, characters: int, counted: int) -> None:
        """Learn from an answer: a request of ``characters`` characters counted ``counted`` tokens."""
        if characters > 0:
            with self._lock:
                self._samples.append((characters, counted))
