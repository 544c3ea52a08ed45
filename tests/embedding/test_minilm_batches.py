"""The local model's batches: capped in rows and in padded word pieces, and the same vectors however batched."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.embedding import MAX_WORD_PIECES, MiniLMEmbedder

# Texts from one word to past the model's window, so batches mix short and full-width rows.
TEXTS = [" ".join(f"word{n}" for n in range(count)) for count in (1, 3, 7, 15, 40, 90, 200, 400, 2, 60, 120, 9)]


@pytest.fixture(scope="module")
def embedder() -> MiniLMEmbedder:
    return MiniLMEmbedder(batch_size=4, threads=1, batch_word_pieces=MAX_WORD_PIECES)


def test_batches_stay_within_rows_and_word_pieces_and_cover_every_text_once(embedder):
    widths = {position: len(ids) for position, ids in enumerate(embedder._token_ids(TEXTS))}
    batches = [positions for positions, _ in embedder.iter_batches(TEXTS)]
    assert sorted(p for batch in batches for p in batch) == list(range(len(TEXTS)))
    for batch in batches:
        assert len(batch) <= 4
        assert len(batch) * max(widths[p] for p in batch) <= MAX_WORD_PIECES
    # Shortest first: several short texts share a batch, a full-window text is alone.
    assert len(batches[0]) == 4
    full = [batch for batch in batches if max(widths[p] for p in batch) == MAX_WORD_PIECES]
    assert full and all(len(batch) == 1 for batch in full)


def test_vectors_do_not_depend_on_how_texts_were_batched(embedder):
    alone = np.stack([embedder.embed([text])[0] for text in TEXTS])
    wide = MiniLMEmbedder(batch_size=16, threads=1, batch_word_pieces=16 * MAX_WORD_PIECES)
    np.testing.assert_allclose(embedder.embed(TEXTS), alone, atol=1e-5)
    np.testing.assert_allclose(wide.embed(TEXTS), alone, atol=1e-5)


def test_a_budget_below_one_full_window_is_refused():
    with pytest.raises(ValueError, match="batch_word_pieces must be at least 256"):
        MiniLMEmbedder(batch_word_pieces=MAX_WORD_PIECES - 1)
