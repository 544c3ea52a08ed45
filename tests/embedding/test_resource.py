"""EmbedderResource: the remote embedder when EMBEDDING_* are all set, the local model when none is."""

from __future__ import annotations

import dagster as dg
import numpy as np
import pytest

from pipeline.defs import resource_handles
from pipeline.defs.endpoints import EmbeddingEndpoint
from pipeline.defs.inference_resources import EmbedderResource
from pipeline.defs.resources import build_resources
from pipeline.embedding import MiniLMEmbedder
from pipeline.embedding.contract import SEARCH_DOCUMENT, SEARCH_QUERY
from pipeline.embedding.remote import HerokuEmbedder
from pipeline.settings import SettingError
from tests.embedding.conftest import API_KEY, MODEL, expected_vector

EMBEDDING_SETTINGS = ("EMBEDDING_URL", "EMBEDDING_KEY", "EMBEDDING_MODEL_ID")
VALUES = {"EMBEDDING_URL": "https://us.inference.heroku.com", "EMBEDDING_KEY": API_KEY, "EMBEDDING_MODEL_ID": MODEL}


@pytest.fixture
def embedding_environment(monkeypatch):
    """Sets the given EMBEDDING_* variables and unsets the others."""

    def set_only(*names: str) -> None:
        for name in EMBEDDING_SETTINGS:
            if name in names:
                monkeypatch.setenv(name, VALUES[name])
            else:
                monkeypatch.delenv(name, raising=False)

    return set_only


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (("EMBEDDING_URL",), "EMBEDDING_KEY and EMBEDDING_MODEL_ID are not set, but EMBEDDING_URL is"),
        (("EMBEDDING_URL", "EMBEDDING_KEY"), "EMBEDDING_MODEL_ID is not set, but EMBEDDING_URL and EMBEDDING_KEY are"),
        (("EMBEDDING_KEY", "EMBEDDING_MODEL_ID"), "EMBEDDING_URL is not set"),
    ],
)
def test_some_but_not_all_embedding_settings_is_an_error_naming_the_missing_ones(embedding_environment, given, message):
    embedding_environment(*given)

    with pytest.raises(SettingError, match=message) as refused:
        build_resources()
    assert API_KEY not in str(refused.value)


def test_the_endpoint_comes_from_the_environment_and_its_key_is_never_shown(embedding_environment):
    embedding_environment()
    assert build_resources()["embedder"].endpoint is None

    embedding_environment(*EMBEDDING_SETTINGS)
    resource = build_resources()["embedder"]

    assert resource.endpoint == EmbeddingEndpoint(VALUES["EMBEDDING_URL"], API_KEY, MODEL)
    assert API_KEY not in repr(resource) + repr(resource.endpoint)


def test_remote_mode_embeds_through_the_endpoint_and_never_builds_the_onnx_session(contract_server):
    # A batch size no other test uses, so the process's shared MiniLM is this test's alone.
    resource = EmbedderResource(endpoint=EmbeddingEndpoint(contract_server.url, API_KEY, MODEL), batch_size=3)
    with dg.build_resources({"embedder": resource}) as built:
        embedder = built.embedder.get()
        assert isinstance(embedder, HerokuEmbedder) and built.embedder.local_embedder() is None
        [(positions, vectors)] = list(embedder.iter_document_batches(["a passage"]))
        [question] = embedder.embed_queries(["a question"])
        # The chunker's word pieces come from the MiniLM tokenizer in this mode too: [CLS] a passage [SEP].
        assert built.embedder.minilm_word_piece_counts(["a passage"]) == [4]
        built.embedder.release_memory()

    np.testing.assert_allclose(vectors[0], expected_vector("a passage", SEARCH_DOCUMENT), atol=1e-6)
    np.testing.assert_allclose(question, expected_vector("a question", SEARCH_QUERY), atol=1e-6)
    minilm = resource_handles._SHARED[("embedder", 3, 0)]
    assert isinstance(minilm, MiniLMEmbedder) and not minilm.session_loaded


def test_local_mode_embeds_with_the_shared_minilm_model():
    resource = EmbedderResource(batch_size=5)
    with dg.build_resources({"embedder": resource}) as built:
        embedder = built.embedder.get()
        assert embedder is built.embedder.local_embedder()
        vectors = embedder.embed_queries(["a question"])

    assert vectors.shape == (1, 384)
    assert resource_handles._SHARED[("embedder", 5, 0)].session_loaded


def test_releasing_memory_drops_the_local_session_until_the_next_embed():
    resource = EmbedderResource(batch_size=6)
    with dg.build_resources({"embedder": resource}) as built:
        embedder = built.embedder.get()
        first = embedder.embed_queries(["a question"])
        built.embedder.release_memory()
        minilm = resource_handles._SHARED[("embedder", 6, 0)]
        assert not minilm.session_loaded
        np.testing.assert_allclose(embedder.embed_queries(["a question"]), first, atol=1e-6)
        assert minilm.session_loaded


@dg.asset
def uses_the_embedder(embedder: EmbedderResource) -> None:
    """Needs the resource set up; embeds nothing."""


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("endpoint", {"url": "https://elsewhere.example", "api_key": "theirs", "model_id": MODEL}),
        ("url", "https://elsewhere.example"),
        ("api_key", "theirs"),
    ],
)
def test_run_config_cannot_say_where_embeddings_go_or_with_which_key(field, value):
    resource = EmbedderResource(endpoint=EmbeddingEndpoint("https://us.inference.heroku.com", API_KEY, MODEL))

    with (
        dg.DagsterInstance.ephemeral() as instance,
        pytest.raises(dg.DagsterInvalidConfigError, match=f'unexpected config entry "{field}"'),
    ):
        dg.materialize(
            [uses_the_embedder],
            resources={"embedder": resource},
            run_config={"resources": {"embedder": {"config": {field: value}}}},
            instance=instance,
        )


def test_a_key_with_a_stray_line_break_fails_setup_naming_embedding_key():
    resource = EmbedderResource(endpoint=EmbeddingEndpoint("https://us.inference.heroku.com", API_KEY + "\n", MODEL))

    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize(
            [uses_the_embedder], resources={"embedder": resource}, instance=instance, raise_on_error=False
        )
        logged = "\n".join(dg.serialize_value(entry) for entry in instance.all_logs(result.run_id))

    assert not result.success
    assert "EMBEDDING_KEY contains a line feed" in logged
    assert API_KEY not in logged
