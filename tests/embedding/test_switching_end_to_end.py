"""Switching the embedding model back and forth through the real assets: local → remote → local → remote.

The demo site over loopback, the local rerank stand-in, and the local embeddings stand-in playing
the EMBEDDING add-on (all-MiniLM-L6-v2 vectors under another model name). Each direction embeds
each distinct text once; a switch back embeds nothing and sends the embeddings endpoint nothing;
no chunk or vector is lost; passages go as ``search_document``, questions as ``search_query``.
"""

from __future__ import annotations

import json

import dagster as dg
import pytest

from pipeline.defs.endpoints import EmbeddingEndpoint
from pipeline.defs.inference_resources import EmbedderResource
from pipeline.demo import QUERIES_FILE, serve_directory, site_dir
from pipeline.embedding import MODEL_NAME, MiniLMEmbedder
from pipeline.embedding.contract import SEARCH_DOCUMENT, SEARCH_QUERY
from pipeline.local import EmbeddingServiceConfig, LocalEmbeddingService, LocalRerankService, ServiceConfig
from pipeline.stand_ins import local_scorer
from pipeline.store.state import StateStore, sqlite_url
from tests.support import TEST_KEY, PipelineRun, make_resources, materialization_metadata, write_sources

EMBEDDING_KEY = "inf-embed-switch-3b8e1f27c9"
REMOTE_MODEL_ID = "cohere-embed-multilingual"


@pytest.fixture(scope="module")
def switches(tmp_path_factory):
    """Run ingest and the downstream assets under each embedding model in turn; yield what each run saw."""
    data_dir = tmp_path_factory.mktemp("data")
    minilm = MiniLMEmbedder()
    with (
        serve_directory(site_dir()) as site_url,
        LocalRerankService(ServiceConfig(api_key=TEST_KEY), scorer=local_scorer(minilm)) as rerank,
        LocalEmbeddingService(EmbeddingServiceConfig(api_key=EMBEDDING_KEY), vectors=minilm) as embeddings,
        dg.DagsterInstance.ephemeral() as instance,
    ):
        sources = write_sources(
            data_dir / "sources.yaml",
            [{"name": "user-guide", "start_urls": [site_url], "allow_private_hosts": True, "max_pages": 200}],
        )
        remote = EmbedderResource(endpoint=EmbeddingEndpoint(embeddings.url, EMBEDDING_KEY, REMOTE_MODEL_ID))
        store = StateStore(sqlite_url(data_dir))
        steps = []
        for name in ("local", "remote", "local", "remote"):
            embedder = remote if name == "remote" else EmbedderResource()
            resources = {**make_resources(data_dir, sources, QUERIES_FILE, rerank.url), "embedder": embedder}
            run = PipelineRun(resources, instance)
            requests_before = len(embeddings.requests)
            ingest = run.ingest("user-guide")
            downstream = run.downstream()
            context_sets = [
                json.loads(line) for line in (data_dir / "ranked_context_sets.jsonl").read_text().splitlines()
            ]
            steps.append(
                {
                    "name": name,
                    "index": materialization_metadata(ingest, "vector_index"),
                    "downstream": downstream,
                    "context_sets": context_sets,
                    "requests": embeddings.requests[requests_before:],
                    "chunk_ids": store.chunks.ids(),
                }
            )
        yield {"steps": steps, "store": store, "remote_model": f"{REMOTE_MODEL_ID}@127.0.0.1:{embeddings.port}"}


def test_each_direction_embeds_each_distinct_text_once_and_a_switch_back_embeds_nothing(switches):
    first_local, first_remote, back_to_local, back_to_remote = switches["steps"]
    distinct_texts = first_local["index"]["texts_embedded"]

    assert distinct_texts > 0
    assert first_remote["index"]["texts_embedded"] == distinct_texts
    assert back_to_local["index"]["texts_embedded"] == 0
    assert back_to_remote["index"]["texts_embedded"] == 0
    # The switch back to the remote model sent no passage at all.
    assert {request.input_type for request in back_to_remote["requests"]} == {SEARCH_QUERY}
    assert all(step["chunk_ids"] == first_local["chunk_ids"] for step in switches["steps"])


def test_passages_go_as_search_documents_and_questions_as_search_queries(switches):
    first_remote = switches["steps"][1]
    documents = [request for request in first_remote["requests"] if request.input_type == SEARCH_DOCUMENT]
    queries = [request for request in first_remote["requests"] if request.input_type == SEARCH_QUERY]

    assert sum(len(request.inputs) for request in documents) == first_remote["index"]["texts_embedded"]
    assert {request.input_type for request in first_remote["requests"]} == {SEARCH_DOCUMENT, SEARCH_QUERY}
    assert len(queries) >= 1 and all(request.status == 200 for request in first_remote["requests"])
    # Only the remote steps talk to the endpoint.
    assert switches["steps"][0]["requests"] == [] and switches["steps"][2]["requests"] == []


def test_the_context_sets_say_which_embedding_model_found_their_passages(switches):
    models = [{context_set["embedding_model"] for context_set in step["context_sets"]} for step in switches["steps"]]

    remote = switches["remote_model"]
    assert models == [{MODEL_NAME}, {remote}, {MODEL_NAME}, {remote}]
    assert all(step["downstream"].success for step in switches["steps"])
    # The stand-in returns all-MiniLM-L6-v2 vectors under the remote name: the same passages come back.
    first, second = (step["context_sets"] for step in switches["steps"][:2])
    assert [[p["chunk_id"] for p in c["passages"]] for c in first] == [
        [p["chunk_id"] for p in c["passages"]] for c in second
    ]


def test_nothing_is_lost_both_models_keep_a_vector_of_every_text(switches):
    store = switches["store"]
    texts = switches["steps"][0]["index"]["texts_embedded"]

    for model in (MODEL_NAME, switches["remote_model"]):
        assert store.embeddings.count_pending("user-guide", model) == 0
    # The local model's table also holds the header lines' vectors, which the remote model never embeds.
    assert store.embeddings.count(MODEL_NAME) >= texts
    assert store.embeddings.count(switches["remote_model"]) == texts
