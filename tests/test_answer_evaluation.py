"""Answer metrics (pipeline.evaluation.answers) on small hand-checked cases."""

from __future__ import annotations

import pytest

from pipeline.evaluation.answers import AnswerOutcome, evaluate_answers
from pipeline.evaluation.labels import LabelledQuery, LabelledSet
from pipeline.store.records import Query

BASE = "https://docs.example.com/guide/"
LABELS = LabelledSet(
    corpus="example",
    base_url=BASE,
    queries=(
        LabelledQuery("a", "how do I install it?", {"install.html": 2, "faq.html": 1}),
        LabelledQuery("b", "what does error 7 mean?", {"errors.html": 2}),
        LabelledQuery("c", "how long are chunks?", {"chunking.html": 2, "glossary.html": 1}),
        LabelledQuery("d", "how do I deploy?", {"deploy.html": 2}),
        LabelledQuery("e", "what is new?", {"changelog.html": 2}),
    ),
)
UNANSWERABLE = [Query(f"u{n}", f"unanswerable question {n}") for n in range(1, 6)]


def _answered(query_id: str, *pages: str) -> AnswerOutcome:
    return AnswerOutcome(query_id, answered=True, cited_urls=tuple(BASE + page for page in pages))


@pytest.fixture
def evaluation():
    labelled = {
        # Three distinct pages (faq.html cited twice counts once): install (2), faq (1), other (0).
        "a": _answered("a", "install.html", "faq.html", "faq.html", "other.html"),
        # faq.html is labelled for a, not for b: grade 0 here.
        "b": _answered("b", "faq.html"),
        # A declined answer: whatever it carries is no citation.
        "c": AnswerOutcome("c", answered=False, cited_urls=(BASE + "chunking.html",)),
        "d": AnswerOutcome("d", answered=True, cited_urls=(BASE + "deploy.html",), failed=True),
        # e has no answer at all.
    }
    unanswerable = {
        "u1": AnswerOutcome("u1", answered=False),
        "u2": _answered("u2", "faq.html"),
        "u3": AnswerOutcome("u3", answered=False),
        "u4": AnswerOutcome("u4", answered=False, failed=True),
        # u5 has no answer at all.
    }
    return evaluate_answers(LABELS, labelled, UNANSWERABLE, unanswerable)


def test_citation_precision_pools_the_distinct_pages_each_answer_cites(evaluation):
    # a: 2 of 3 pages relevant; b: 0 of 1; c declined, d and e failed: (2 + 0) / (3 + 1).
    assert evaluation.citation_precision == pytest.approx(0.5)
    scores = {score.query_id: score for score in evaluation.labelled}
    assert scores["a"].cited_pages == ("install.html", "faq.html", "other.html")
    assert scores["a"].relevant_cited == 2
    assert scores["c"].cited_pages == ()


def test_answered_from_relevant_counts_abstentions_against_it_and_failures_apart(evaluation):
    # a cites a grade-2 page; b does not; c declined; d failed and e got no answer: 1 of a, b, c.
    assert evaluation.answered_from_relevant == pytest.approx(1 / 3)


def test_abstention_rate_over_the_unanswerable_questions_that_got_an_answer(evaluation):
    # u1 and u3 declined, u2 answered; u4 failed and u5 got no answer: 2 of u1, u2, u3.
    assert evaluation.abstention_rate == pytest.approx(2 / 3)


def test_counts_and_json(evaluation):
    assert evaluation.counts() == {
        "labelled_questions": 5,
        "labelled_answered": 2,
        "labelled_declined": 1,
        "labelled_failed": 2,
        "unanswerable_questions": 5,
        "unanswerable_answered": 1,
        "unanswerable_declined": 2,
        "unanswerable_failed": 2,
    }
    output = evaluation.to_json()
    assert output["per_query"]["b"] == {
        "status": "answered",
        "cited_pages": ["faq.html"],
        "relevant_cited": 0,
        "cites_answering_page": False,
    }
    assert output["unanswerable_per_query"] == {
        "u1": "declined",
        "u2": "answered",
        "u3": "declined",
        "u4": "failed",
        "u5": "failed",
    }
    table = evaluation.markdown()
    assert "| 0.500 | 4 cited pages |" in table
    assert "| 0.333 | 3 labelled questions |" in table
    assert "| 0.667 | 3 unanswerable questions |" in table


def test_a_page_off_the_labelled_site_is_not_relevant():
    evaluation = evaluate_answers(
        LABELS, {"a": AnswerOutcome("a", True, ("https://elsewhere.example.org/guide/install.html",))}, [], {}
    )
    assert evaluation.citation_precision == 0.0
    assert evaluation.answered_from_relevant == 0.0


def test_rates_without_anything_to_measure_are_none():
    evaluation = evaluate_answers(LABELS, {}, UNANSWERABLE, {})
    assert evaluation.rates() == {
        "citation_precision": None,
        "answered_from_relevant": None,
        "abstention_rate": None,
    }
    assert evaluation.markdown().count("| n/a |") == 3
