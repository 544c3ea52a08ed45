"""Answer quality on labelled questions and on questions the docs do not answer.

Cited answers are judged by the pages they cite, with the same page grades as the retrieval
metrics (``pipeline.evaluation.labels``; a page not listed is grade 0):

- citation precision: of the pages the answers to labelled questions cite, the share of grade 1
  or more. Pooled over every (answer, cited page) pair, a page cited twice in one answer once;
  None when no answer cites anything.
- answered from relevant: of the labelled questions, the share whose answer cites at least one
  grade-2 page. An abstention counts against it: every labelled question has such a page.
- abstention rate: of the questions the docs do not answer (a queries file of their own), the
  share the answerer declined ("not in the docs") instead of answering.

A failed answer (the chat call failed, so no answer was given) or a question without an answer
is neither answered nor declined: it is counted apart and left out of every rate, whose
denominators count only the questions that got an answer. A rate with no such question is None.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.evaluation.labels import LabelledSet, pages_in_order
from pipeline.store.records import Query
from pipeline.tables import Markdown, markdown_table

ANSWERING_GRADE = 2
RELEVANT_GRADE = 1


@dataclass(frozen=True)
class AnswerOutcome:
    """What one question's answer said, as far as the evaluation reads it."""

    query_id: str
    answered: bool  # False: the answerer said the passages do not contain the answer
    cited_urls: tuple[str, ...] = ()
    failed: bool = False  # no answer at all: the call failed (answered and cited_urls are then ignored)


@dataclass(frozen=True)
class LabelledAnswerScore:
    """One labelled question's answer judged against its page grades."""

    query_id: str
    status: str  # "answered", "declined" or "failed" (also for a question that got no answer)
    cited_pages: tuple[str, ...]  # distinct labelled page paths, in citation order
    relevant_cited: int  # of them, grade 1 or more
    cites_answering_page: bool  # at least one of them is grade 2


@dataclass(frozen=True)
class AnswerEvaluation:
    labelled: tuple[LabelledAnswerScore, ...]
    unanswerable: Mapping[str, str]  # query ID → "answered", "declined" or "failed"

    def _labelled_with(self, status: str) -> int:
        return sum(1 for score in self.labelled if score.status == status)

    def _unanswerable_with(self, status: str) -> int:
        return sum(1 for value in self.unanswerable.values() if value == status)

    @property
    def citation_precision(self) -> float | None:
        cited = sum(len(score.cited_pages) for score in self.labelled if score.status == "answered")
        relevant = sum(score.relevant_cited for score in self.labelled if score.status == "answered")
        return relevant / cited if cited else None

    @property
    def answered_from_relevant(self) -> float | None:
        given = [score for score in self.labelled if score.status != "failed"]
        return sum(1 for score in given if score.cites_answering_page) / len(given) if given else None

    @property
    def abstention_rate(self) -> float | None:
        given = len(self.unanswerable) - self._unanswerable_with("failed")
        return self._unanswerable_with("declined") / given if given else None

    def counts(self) -> dict[str, int]:
        return {
            "labelled_questions": len(self.labelled),
            "labelled_answered": self._labelled_with("answered"),
            "labelled_declined": self._labelled_with("declined"),
            "labelled_failed": self._labelled_with("failed"),
            "unanswerable_questions": len(self.unanswerable),
            "unanswerable_answered": self._unanswerable_with("answered"),
            "unanswerable_declined": self._unanswerable_with("declined"),
            "unanswerable_failed": self._unanswerable_with("failed"),
        }

    def rates(self) -> dict[str, float | None]:
        return {
            "citation_precision": self.citation_precision,
            "answered_from_relevant": self.answered_from_relevant,
            "abstention_rate": self.abstention_rate,
        }

    def markdown(self) -> Markdown:
        counts = self.counts()
        return markdown_table(
            ["metric", "value", "over"],
            [
                [
                    "citation precision (cited pages of grade ≥ 1)",
                    _rate(self.citation_precision),
                    f"{sum(len(s.cited_pages) for s in self.labelled if s.status == 'answered')} cited pages",
                ],
                [
                    "answered from relevant (cites a grade-2 page)",
                    _rate(self.answered_from_relevant),
                    f"{counts['labelled_questions'] - counts['labelled_failed']} labelled questions",
                ],
                [
                    "abstention rate (questions the docs do not answer)",
                    _rate(self.abstention_rate),
                    f"{counts['unanswerable_questions'] - counts['unanswerable_failed']} unanswerable questions",
                ],
            ],
            right_aligned=["value"],
        )

    def to_json(self) -> dict[str, Any]:
        return {
            **self.rates(),
            **self.counts(),
            "per_query": {
                score.query_id: {
                    "status": score.status,
                    "cited_pages": list(score.cited_pages),
                    "relevant_cited": score.relevant_cited,
                    "cites_answering_page": score.cites_answering_page,
                }
                for score in self.labelled
            },
            "unanswerable_per_query": dict(self.unanswerable),
        }


def evaluate_answers(
    labels: LabelledSet,
    labelled_answers: Mapping[str, AnswerOutcome],
    unanswerable: Sequence[Query],
    unanswerable_answers: Mapping[str, AnswerOutcome],
) -> AnswerEvaluation:
    """Judge the answers (by query ID) to the labelled questions and to the questions the docs do not answer."""
    return AnswerEvaluation(
        labelled=tuple(
            _labelled_score(query.query_id, query.relevant, labelled_answers.get(query.query_id), labels.base_url)
            for query in labels.queries
        ),
        unanswerable={query.query_id: _status(unanswerable_answers.get(query.query_id)) for query in unanswerable},
    )


def _status(answer: AnswerOutcome | None) -> str:
    if answer is None or answer.failed:
        return "failed"
    return "answered" if answer.answered else "declined"


def _labelled_score(
    query_id: str, grades: Mapping[str, int], answer: AnswerOutcome | None, base_url: str | None
) -> LabelledAnswerScore:
    status = _status(answer)
    # An abstention cites nothing; whatever a declined or failed answer carries is not a citation.
    pages = tuple(pages_in_order(answer.cited_urls, base_url)) if answer is not None and status == "answered" else ()
    return LabelledAnswerScore(
        query_id=query_id,
        status=status,
        cited_pages=pages,
        relevant_cited=sum(1 for page in pages if grades.get(page, 0) >= RELEVANT_GRADE),
        cites_answering_page=any(grades.get(page, 0) >= ANSWERING_GRADE for page in pages),
    )


def _rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
