"""The local model's memory: its ONNX session can be dropped once a step is done embedding, and comes back on use."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.embedding import MiniLMEmbedder

TEXTS = [" ".join(f"term{n} of section {count}" for n in range(count)) for count in (5, 40, 120, 60, 200, 10)]


def resident_mb() -> float:
    [line] = [line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmRSS:")]
    return int(line.split()[1]) / 1024


def test_a_released_session_gives_its_memory_back_and_is_built_again_on_the_next_embed():
    embedder = MiniLMEmbedder(threads=1)
    before = embedder.embed(TEXTS)
    assert embedder.session_loaded
    loaded = resident_mb()

    embedder.release_session()

    assert not embedder.session_loaded
    # The session alone is about 150 MB of this process (the int8 model's weights after graph optimisation).
    assert resident_mb() < loaded - 50
    np.testing.assert_allclose(embedder.embed(TEXTS), before, atol=1e-6)
    assert embedder.session_loaded


def test_releasing_a_session_never_built_is_harmless():
    embedder = MiniLMEmbedder(threads=1)
    embedder.release_session()
    assert not embedder.session_loaded
    assert embedder.word_piece_counts(["a passage"]) == [4]
