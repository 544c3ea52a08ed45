"""Metrics checked against values computed by hand."""

import math

import pytest

from pipeline.demo import LABELLED_QUERIES_FILE
from pipeline.evaluation.labels import LabelFileError, load_labelled_set, page_path, pages_in_order
from pipeline.evaluation.metrics import evaluate_rankings


def test_hand_computed_example():
    qrels = {"q1": {"a.html": 2, "b.html": 1}, "q2": {"c.html": 2}}
    rankings = {"q1": ["x.html", "a.html", "y.html", "b.html"], "q2": [f"p{i}.html" for i in range(12)] + ["c.html"]}
    result = evaluate_rankings(qrels, rankings)
    # q1, with trec_eval's linear gains: DCG = 2/log2(3) + 1/log2(5); ideal = 2/log2(2) + 1/log2(3)
    dcg = 2 / math.log2(3) + 1 / math.log2(5)
    ideal = 2 / 1 + 1 / math.log2(3)
    assert result.per_query["q1"]["ndcg@10"] == pytest.approx(dcg / ideal)
    assert result.per_query["q1"]["mrr@10"] == pytest.approx(0.5)
    assert result.per_query["q1"]["recall@50"] == pytest.approx(1.0)
    # q2: relevant page at rank 13, beyond the cut-offs of nDCG@10 and MRR@10.
    assert result.per_query["q2"] == {"ndcg@10": 0.0, "mrr@10": 0.0, "recall@50": 1.0}
    assert result.mean["recall@50"] == pytest.approx(1.0)
    assert result.mean["mrr@10"] == pytest.approx(0.25)


def test_query_without_ranking_scores_zero():
    result = evaluate_rankings({"q1": {"a.html": 2}}, {})
    assert result.per_query["q1"] == {"ndcg@10": 0.0, "mrr@10": 0.0, "recall@50": 0.0}


def test_chunk_urls_reduce_to_distinct_pages():
    base = "http://127.0.0.1:8764/"
    urls = [base + "guide/a.html", base, base + "guide/a.html", base + "b.html"]
    assert pages_in_order(urls, base) == ["guide/a.html", "index.html", "b.html"]
    assert page_path("http://elsewhere/x.html", base) == "http://elsewhere/x.html"


def test_demo_labels_load():
    labelled = load_labelled_set(LABELLED_QUERIES_FILE)
    assert labelled.corpus == "demo-user-guide"
    assert len(labelled.queries) >= 40
    assert all(2 in query.relevant.values() for query in labelled.queries)


def test_pages_default_to_each_site_root_and_labels_may_name_a_base_url(tmp_path):
    assert page_path("http://127.0.0.1:8764/guide/") == "guide/index.html"
    labels = tmp_path / "labels.yaml"
    labels.write_text(
        "corpus: pg\nbase_url: https://www.postgresql.org/docs/15/\n"
        "queries:\n  - {id: a, query: upsert, relevant: [{path: sql-insert.html, grade: 2}]}\n"
    )
    labelled = load_labelled_set(labels)
    assert pages_in_order(["https://www.postgresql.org/docs/15/sql-insert.html"], labelled.base_url) == [
        "sql-insert.html"
    ]


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("corpus: x\nqueries: []\n", "no labelled queries"),
        ("corpus: x\nbase_url: docs\nqueries: []\n", "base_url must be an absolute URL"),
        (
            "queries:\n  - {id: a, query: q, relevant: [{path: p.html}]}\n",
            r"entry 1: relevant 1: 'grade' must be a whole number, 0 or more, got None \(id 'a'\)",
        ),
        (
            "queries:\n  - {id: a, query: q, relevant: [{path: p.html, grade: 2}]}\n"
            "  - {id: b, query: null, relevant: [{path: p.html, grade: 2}]}\n",
            r"entry 2: 'query' must be a non-empty string \(id 'b'\)",
        ),
        (
            "queries:\n  - {id: a, query: q, relevant: [{path: p.html, grade: 2}, {path: q.html, grade: -1}]}\n",
            r"entry 1: relevant 2: 'grade' must be a whole number, 0 or more, got -1 \(id 'a'\)",
        ),
        (
            "queries:\n  - {id: a, query: q, relevant: [{path: p.html, grade: 1.5}]}\n",
            r"entry 1: relevant 1: 'grade' must be a whole number, 0 or more, got 1.5",
        ),
        (
            "queries:\n  - {id: a, query: q, relevant: [{path: p.html, grade: '2'}]}\n",
            r"entry 1: relevant 1: 'grade' must be a whole number, 0 or more, got '2'",
        ),
        (
            "queries:\n  - {id: a, query: q, relevant: [{path: p.html, grade: true}]}\n",
            r"entry 1: relevant 1: 'grade' must be a whole number, 0 or more, got True",
        ),
        (
            "queries:\n  - {id: a, query: q, relevant: [{path: null, grade: 2}]}\n",
            r"entry 1: relevant 1: 'path' must be a non-empty string \(id 'a'\)",
        ),
        ("queries:\n  - {id: null, query: q, relevant: []}\n", "entry 1: 'id' must be a non-empty string"),
        ("queries:\n  - {id: a, query: q}\n", r"entry 1: 'relevant' must be a list of \{path, grade\} \(id 'a'\)"),
        ("queries:\n  - just a string\n", "entry 1: expected a mapping with id, query and relevant"),
        (
            'queries:\n  - {id: a, query: "bell\\a", relevant: []}\n',
            r"entry 1: 'query' contains the control character U\+0007 at character 5 \(id 'a'\)",
        ),
        (
            f"queries:\n  - {{id: a, query: {'z' * 5000}, relevant: []}}\n",
            r"entry 1: 'query' is 5,000 characters, more than the 2,000 allowed \(id 'a'\)",
        ),
        (
            "queries:\n  - {id: a, query: q, relevant: []}\n  - {id: a, query: r, relevant: []}\n",
            "duplicate query ids a",
        ),
    ],
)
def test_bad_label_files_are_refused_with_the_reason(tmp_path, text, complaint):
    path = tmp_path / "labels.yaml"
    path.write_text(text)
    with pytest.raises(LabelFileError, match=complaint) as raised:
        load_labelled_set(path)
    assert str(path) in str(raised.value)


def test_a_label_file_that_is_not_utf8_is_refused_naming_the_file_and_line(tmp_path):
    path = tmp_path / "labels.yaml"
    path.write_bytes("corpus: x\nqueries:\n  - {id: a, query: caf\xe9, relevant: []}\n".encode("latin-1"))
    with pytest.raises(LabelFileError) as raised:
        load_labelled_set(path)
    assert str(raised.value) == f"{path}: not UTF-8 text (invalid continuation byte at line 3, byte 41)"
