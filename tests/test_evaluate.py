"""The evaluation assets on the demo site: real Chroma, BM25 index and rerank service on loopback, and the
extractive answerer in process."""

from __future__ import annotations

import json
import math
from pathlib import Path

import dagster as dg
import pytest

from pipeline.answer.extractive import ExtractiveChatModel
from pipeline.chunking import header_line
from pipeline.demo import LABELLED_QUERIES_FILE, QUERIES_FILE, UNANSWERABLE_QUERIES_FILE, serve_directory, site_dir
from pipeline.embedding import MiniLMEmbedder
from pipeline.evaluation.labels import load_labelled_set, page_path, pages_in_order
from pipeline.local import LocalRerankService, ServiceConfig, StoredEmbeddings
from pipeline.queries import load_queries
from pipeline.stand_ins import local_scorer
from pipeline.store.lexical import LexicalIndex
from pipeline.store.state import StateStore, sqlite_url
from pipeline.store.vectors import ChromaConnection, VectorIndex
from tests.support import TEST_KEY, PipelineRun, make_resources, materialization_metadata, write_sources

LABELS = load_labelled_set(LABELLED_QUERIES_FILE)
UNANSWERABLE = load_queries(UNANSWERABLE_QUERIES_FILE)
RANKINGS = ("bm25", "dense", "hybrid", "reranked", "context_sets")
RETRIEVAL = dg.AssetSelection.assets("retrieval_evaluation")
ANSWERS = dg.AssetSelection.assets("answer_evaluation")
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """Ingest the demo site, evaluate twice (the second run from the rerank cache), then once with broken labels."""
    data_dir = tmp_path_factory.mktemp("data")
    store = StateStore(sqlite_url(data_dir))
    scorer = local_scorer(known_vectors=StoredEmbeddings(store.embeddings.iter_embedded_texts))
    with (
        serve_directory(site_dir()) as site_url,
        LocalRerankService(ServiceConfig(api_key=TEST_KEY), scorer=scorer) as service,
    ):
        sources = write_sources(
            data_dir / "sources.yaml",
            [{"name": "user-guide", "start_urls": [site_url], "allow_private_hosts": True, "max_pages": 200}],
        )
        with dg.DagsterInstance.ephemeral() as instance:
            run = PipelineRun(make_resources(data_dir, sources, QUERIES_FILE, service.url), instance)
            run.ingest("user-guide")
            first = run.downstream(selection=RETRIEVAL)
            output = json.loads((data_dir / "retrieval_evaluation.json").read_text())
            requests_first = len(service.requests)
            second = run.downstream(selection=RETRIEVAL)
            requests_second = len(service.requests) - requests_first
            broken_labels = data_dir / "broken_labels.yaml"
            broken_labels.write_text("corpus: demo\nqueries:\n  - {id: x1, query: 'no relevant list'}\n")
            broken_run = PipelineRun(
                make_resources(data_dir, sources, QUERIES_FILE, service.url, labelled_queries_path=broken_labels),
                instance,
            )
            broken = broken_run.downstream(raise_on_error=False, selection=RETRIEVAL)
            output_after_broken = json.loads((data_dir / "retrieval_evaluation.json").read_text())
            # The answers: the labelled questions rerank from the cache retrieval_evaluation filled.
            requests_before_answers = len(service.requests)
            answers_first = run.downstream(selection=ANSWERS)
            answers_output = json.loads((data_dir / "answer_evaluation.json").read_text())
            answers_requests = [len(service.requests) - requests_before_answers]
            answers_second = run.downstream(selection=ANSWERS)
            answers_requests.append(len(service.requests) - requests_before_answers - answers_requests[0])
            other_corpus = PipelineRun(
                make_resources(
                    data_dir,
                    sources,
                    QUERIES_FILE,
                    service.url,
                    unanswerable_queries_path=REPO / "benchmarks/labels/unanswerable/postgresql15.yaml",
                ),
                instance,
            )
            answers_other_corpus = other_corpus.downstream(raise_on_error=False, selection=ANSWERS)
            yield {
                "data_dir": data_dir,
                "first": first,
                "second": second,
                "broken": broken,
                "output": output,
                "requests_first": requests_first,
                "requests_second": requests_second,
                "output_after_broken": output_after_broken,
                "answers_first": answers_first,
                "answers_second": answers_second,
                "answers_output": answers_output,
                "answers_requests": answers_requests,
                "answers_other_corpus": answers_other_corpus,
            }
    store.dispose()


def _ndcg_at_10(ranking: list[str], grades: dict[str, int]) -> float:
    # trec_eval's nDCG: gain = grade, discount log2(rank + 1), ideal from every judged page.
    dcg = sum(grades.get(page, 0) / math.log2(rank + 1) for rank, page in enumerate(ranking[:10], start=1))
    ideal = sum(grade / math.log2(rank + 1) for rank, grade in enumerate(sorted(grades.values(), reverse=True)[:10], 1))
    return dcg / ideal


def _mrr_at_10(ranking: list[str], grades: dict[str, int]) -> float:
    return next((1 / rank for rank, page in enumerate(ranking[:10], start=1) if grades.get(page, 0) > 0), 0.0)


def _recall_at_50(ranking: list[str], grades: dict[str, int]) -> float:
    relevant = {page for page, grade in grades.items() if grade > 0}
    return len(relevant & set(ranking[:50])) / len(relevant)


def test_metadata_matches_an_independent_computation_on_the_same_rankings(evaluated):
    metadata = materialization_metadata(evaluated["first"], "retrieval_evaluation")
    rankings = evaluated["output"]["page_rankings"]
    assert set(rankings) == set(RANKINGS)
    for name in RANKINGS:
        assert set(rankings[name]) == {query.query_id for query in LABELS.queries}
        for metric, formula in (("ndcg@10", _ndcg_at_10), ("mrr@10", _mrr_at_10), ("recall@50", _recall_at_50)):
            expected = sum(formula(rankings[name][q.query_id], dict(q.relevant)) for q in LABELS.queries) / len(
                LABELS.queries
            )
            assert isinstance(metadata[f"{metric}/{name}"], float)
            assert metadata[f"{metric}/{name}"] == pytest.approx(expected, abs=1e-9), (metric, name)
    # Retrieval finds relevant demo pages: the figures are not degenerate.
    assert 0.5 < metadata["ndcg@10/dense"] < 1.0 and metadata["recall@50/hybrid"] > 0.8
    assert metadata["ndcg@10 gain/final_minus_dense"] == pytest.approx(
        metadata["ndcg@10/context_sets"] - metadata["ndcg@10/dense"]
    )
    assert metadata["ndcg@10 gain/rerank_minus_hybrid"] == pytest.approx(
        metadata["ndcg@10/reranked"] - metadata["ndcg@10/hybrid"]
    )
    assert "| reranked: hybrid candidates after rerank |" in metadata["table"]


def test_rankings_are_the_indexes_own(evaluated):
    """BM25 and dense rankings equal what the lexical index and Chroma return for the same questions."""
    data_dir = evaluated["data_dir"]
    store = StateStore(sqlite_url(data_dir))
    urls = {chunk.chunk_id: chunk.url for chunk in store.chunks.iterate()}
    lexical = LexicalIndex(data_dir)
    embedder = MiniLMEmbedder()
    vectors = VectorIndex(ChromaConnection(data_dir=str(data_dir)), embedder.model, embedder)
    rankings = evaluated["output"]["page_rankings"]
    for query in LABELS.queries[:5]:
        bm25 = [urls[hit.chunk_id] for hit in lexical.search(query.query, 50)]
        assert rankings["bm25"][query.query_id] == pages_in_order(bm25)
        dense = [urls[hit.chunk_id] for hit in vectors.query(embedder.embed([query.query])[0], 50)]
        assert rankings["dense"][query.query_id] == pages_in_order(dense)
        # Reranking reorders the hybrid candidates; the context set keeps a subset of them.
        assert set(rankings["reranked"][query.query_id]) == set(rankings["hybrid"][query.query_id])
        assert set(rankings["context_sets"][query.query_id]) <= set(rankings["reranked"][query.query_id])
    store.dispose()


def test_rerank_goes_through_the_endpoint_once_and_then_the_cache(evaluated):
    first = materialization_metadata(evaluated["first"], "retrieval_evaluation")
    second = materialization_metadata(evaluated["second"], "retrieval_evaluation")
    questions = len(LABELS.queries)
    # 50 candidates per question: one search unit each.
    assert first["queries"] == questions and first["queries_not_reranked"] == 0
    assert first["billed_search_units"] == first["rerank_requests"] == evaluated["requests_first"] == questions
    assert second["billed_search_units"] == second["rerank_requests"] == evaluated["requests_second"] == 0
    assert second["rerank_cache_hits"] == questions
    assert {key: value for key, value in second.items() if "/" in key} == {
        key: value for key, value in first.items() if "/" in key
    }


def test_the_check_compares_the_final_order_with_dense_retrieval(evaluated):
    [check] = evaluated["first"].get_asset_check_evaluations()
    metadata = materialization_metadata(evaluated["first"], "retrieval_evaluation")
    assert check.check_name == "context_sets_not_below_dense_retrieval"
    assert check.passed == (metadata["ndcg@10/context_sets"] >= metadata["ndcg@10/dense"])
    assert check.metadata["ndcg@10/dense"].value == metadata["ndcg@10/dense"]


def test_broken_labels_fail_with_the_file_named_and_keep_the_last_evaluation(evaluated):
    broken = evaluated["broken"]
    assert not broken.success
    [failure] = [event for event in broken.all_events if event.is_step_failure]
    message = failure.step_failure_data.error.message
    assert "broken_labels.yaml" in message and "entry 1" in message and "PIPELINE_LABELLED_QUERIES" in message
    assert evaluated["output_after_broken"] == evaluated["output"]


def test_ingest_embedded_every_header_line_for_the_scorer(evaluated):
    store = StateStore(sqlite_url(evaluated["data_dir"]))
    headers = {header_line(text) for text in store.chunks.iter_embedding_texts()} - {None}
    assert len(headers) > 20 and store.embeddings.embedded_headers() == headers
    store.dispose()


def _rates_from_the_answers(answers: list[dict]) -> dict[str, float]:
    """The three rates, computed here from the published answers and the label files alone."""
    grades = {query.query_id: dict(query.relevant) for query in LABELS.queries}
    by_id = {answer["query_id"]: answer for answer in answers}
    cited, relevant, from_relevant = 0, 0, 0
    for query_id, page_grades in grades.items():
        answer = by_id[query_id]
        urls = [citation["url"] for citation in answer["citations"]] if answer["answered"] else []
        pages = {page_path(url, LABELS.base_url) for url in urls}
        cited += len(pages)
        relevant += sum(1 for page in pages if page_grades.get(page, 0) >= 1)
        from_relevant += any(page_grades.get(page, 0) == 2 for page in pages)
    declined = sum(not by_id[query.query_id]["answered"] for query in UNANSWERABLE)
    return {
        "citation_precision": relevant / cited,
        "answered_from_relevant": from_relevant / len(grades),
        "abstention_rate": declined / len(UNANSWERABLE),
    }


def test_answer_metrics_match_a_computation_from_the_answers_themselves(evaluated):
    metadata = materialization_metadata(evaluated["answers_first"], "answer_evaluation")
    output = evaluated["answers_output"]
    answers = output["answers"]
    assert [answer["query_id"] for answer in answers] == [
        *(query.query_id for query in LABELS.queries),
        *(query.query_id for query in UNANSWERABLE),
    ]
    assert not any(answer["error"] for answer in answers)
    assert all(answer["model"] == "extractive-answerer" for answer in answers)
    expected = _rates_from_the_answers(answers)
    for name, value in expected.items():
        assert isinstance(metadata[name], float)
        assert metadata[name] == pytest.approx(value, abs=1e-9), name
        assert output[name] == metadata[name]
    assert metadata["labelled_questions"] == len(LABELS.queries) and metadata["labelled_failed"] == 0
    assert metadata["unanswerable_questions"] == len(UNANSWERABLE) and metadata["unanswerable_failed"] == 0
    assert metadata["chat_model"] == ExtractiveChatModel().model and metadata["corpus"] == LABELS.corpus
    assert "| citation precision (cited pages of grade ≥ 1) |" in metadata["table"]
    assert metadata["preview"].startswith(f"**{LABELS.queries[0].query_id}**: {LABELS.queries[0].query}")


def test_answer_evaluation_reranks_only_the_new_questions_then_spends_nothing(evaluated):
    first = materialization_metadata(evaluated["answers_first"], "answer_evaluation")
    second = materialization_metadata(evaluated["answers_second"], "answer_evaluation")
    questions = len(LABELS.queries) + len(UNANSWERABLE)
    # The labelled questions' candidates were reranked (and cached) by retrieval_evaluation.
    assert evaluated["answers_requests"] == [len(UNANSWERABLE), 0]
    assert (first["billed_search_units"], first["rerank_cache_hits"]) == (len(UNANSWERABLE), len(LABELS.queries))
    assert first["prompt_tokens"] > 0 and first["completion_tokens"] > 0 and first["answer_cache_hits"] == 0
    assert (second["billed_search_units"], second["rerank_cache_hits"]) == (0, questions)
    assert (second["prompt_tokens"], second["completion_tokens"], second["answer_cache_hits"]) == (0, 0, questions)
    for name in ("citation_precision", "answered_from_relevant", "abstention_rate"):
        assert second[name] == first[name]


def test_answer_evaluation_publishes_nothing(evaluated):
    store = StateStore(sqlite_url(evaluated["data_dir"]))
    assert store.answers.latest() == {} and store.context_sets.latest() == {}
    assert not (evaluated["data_dir"] / "answers.jsonl").exists()
    store.dispose()


def test_unanswerable_questions_of_another_corpus_fail_the_answer_evaluation(evaluated):
    result = evaluated["answers_other_corpus"]
    assert not result.success
    [failure] = [event for event in result.all_events if event.is_step_failure]
    message = failure.step_failure_data.error.message
    assert "'postgresql-doc-15'" in message and "'demo-user-guide'" in message
    assert "PIPELINE_UNANSWERABLE_QUERIES" in message
