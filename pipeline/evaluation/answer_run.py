"""The answer evaluation run: the labelled questions and the questions the docs do not answer, asked as
``pipeline ask`` asks them, and judged by :func:`~pipeline.evaluation.answers.evaluate_answers`.

Every question goes through :class:`~pipeline.ask.Asker`: hybrid retrieval, rerank through the durable
rerank cache, the per-page cap and token packing, and the chat model through the durable answer cache,
with nothing written to the published tables. So an evaluation re-run on an unchanged index bills
neither search units nor tokens, and the figures are those of the chat model the answers asset uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pipeline.answer.answering import AnswerReport
from pipeline.ask import Asker
from pipeline.evaluation.answers import AnswerEvaluation, AnswerOutcome, evaluate_answers
from pipeline.evaluation.labels import LabelFileError, LabelledSet
from pipeline.queries import QueriesFileError, load_queries
from pipeline.ranking import RerankRunReport
from pipeline.store.records import Answer, Query


@dataclass(frozen=True)
class UnanswerableSet:
    """Questions a corpus does not answer (same format as the queries file, plus ``corpus``)."""

    corpus: str
    queries: tuple[Query, ...]


def load_unanswerable_set(path: str | Path, labels: LabelledSet) -> UnanswerableSet:
    """The questions in the YAML file at ``path``, to be asked beside ``labels``.

    Raises :class:`~pipeline.evaluation.labels.LabelFileError` when the file cannot be read, is not a
    queries file, names another corpus than the labelled set, or reuses one of its query IDs.
    """
    path = Path(path)
    if not path.is_file():
        raise LabelFileError(f"unanswerable questions file {path} does not exist")
    try:
        queries = load_queries(path)
    except QueriesFileError as error:
        raise LabelFileError(str(error)) from None
    # load_queries has read it already: what is left to read is the corpus a YAML file names.
    corpus = "" if path.suffix == ".jsonl" else str(yaml.safe_load(path.read_text(encoding="utf-8")).get("corpus", ""))
    if corpus and labels.corpus and corpus != labels.corpus:
        raise LabelFileError(f"{path}: questions for corpus {corpus!r}, but the labelled set is for {labels.corpus!r}")
    shared = sorted({query.query_id for query in queries} & {query.query_id for query in labels.queries})
    if shared:
        raise LabelFileError(f"{path}: query ids also in the labelled set: {', '.join(shared)}")
    return UnanswerableSet(corpus, tuple(queries))


def evaluated_outcome(answer: Answer) -> AnswerOutcome:
    """What the metrics read of an answer: answered or declined, the URLs it cites, or that it failed."""
    return AnswerOutcome(
        answer.query_id,
        answered=answer.answered,
        cited_urls=tuple(str(citation["url"]) for citation in answer.citations),
        failed=answer.failed,
    )


@dataclass(frozen=True)
class AnswerEvaluationRun:
    evaluation: AnswerEvaluation
    answers: AnswerReport  # every question's answer, the labelled ones first
    rerank: RerankRunReport
    chat_model: str

    def to_json(self) -> dict[str, Any]:
        """The rates, counts and per-question judgements, and every answer as the answers asset publishes it."""
        return {
            "model": self.chat_model,
            **self.evaluation.to_json(),
            "answers": [answer.published() for answer in self.answers.answers],
        }


def run_answer_evaluation(
    labels: LabelledSet, unanswerable: UnanswerableSet, asker: Asker, *, max_workers: int = 4
) -> AnswerEvaluationRun:
    """Ask every labelled and unanswerable question, answer them and judge the answers.

    Raises the rerank and chat clients' configuration errors (a refused key or model), as a run would
    fail on them; a question whose answer fails is counted apart by the metrics.
    """
    labelled = [Query(query.query_id, query.query) for query in labels.queries]
    context_sets, rerank = asker.context_sets([*labelled, *unanswerable.queries], max_workers=max_workers)
    report = asker.answers(context_sets, max_workers=max_workers)
    outcomes = {answer.query_id: evaluated_outcome(answer) for answer in report.answers}
    labelled_ids = {query.query_id for query in labelled}
    evaluation = evaluate_answers(
        labels,
        {query_id: outcome for query_id, outcome in outcomes.items() if query_id in labelled_ids},
        unanswerable.queries,
        {query_id: outcome for query_id, outcome in outcomes.items() if query_id not in labelled_ids},
    )
    return AnswerEvaluationRun(evaluation, report, rerank, asker.chat.model)
