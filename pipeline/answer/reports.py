"""What the answers' checks measure and what the UI previews: plain functions over answers and context sets.

Each report has ``passed``-style properties and the metadata the Dagster UI shows (counts first,
then a few examples), as in :mod:`pipeline.check_reports`, so ``pipeline/defs/answers.py`` only
wires them up.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.answer.citations import parse_answer
from pipeline.answer.prompt import numbered_passages
from pipeline.check_reports import EXAMPLES
from pipeline.store.records import Answer, ContextSet
from pipeline.tables import Markdown, markdown_table


def _problems_table(problems: Sequence[tuple[str, str]]) -> Markdown:
    return markdown_table(["query", "problem"], problems, limit=EXAMPLES)


@dataclass(frozen=True)
class CitationAccount:
    """The published answers by kind, and each answered one that does not cite its own context set soundly."""

    answered: int
    abstentions: int
    failed: int
    problems: tuple[tuple[str, str], ...]

    @property
    def sound(self) -> bool:
        return not self.problems

    def metadata(self) -> dict[str, Any]:
        return {
            "answered": self.answered,
            "abstentions": self.abstentions,
            "failed": self.failed,
            "answers_with_citation_problems": len(self.problems),
            "problems": _problems_table(self.problems),
        }


def _citation_problem(answer: Answer, context_set: ContextSet | None) -> str | None:
    if context_set is None or context_set.content_hash() != answer.context_set_hash:
        return "computed from another context set"
    parsed = parse_answer(answer.answer or "", numbered_passages(context_set.passages))
    if parsed.unresolved:
        return "cites " + ", ".join(f"[{number}]" for number in parsed.unresolved) + ", which no passage has"
    if not parsed.citations:
        return "cites no passage"
    own = {passage["chunk_id"] for passage in context_set.passages}
    if any(citation["chunk_id"] not in own for citation in answer.citations):
        return "a citation names a chunk its context set does not hold"
    return None


def citation_account(answers: Mapping[str, Answer], context_sets: Mapping[str, ContextSet]) -> CitationAccount:
    """Every answered question must cite at least one passage of its own context set, and every ``[n]`` must
    resolve; abstentions and failures are counted apart."""
    problems = []
    for query_id, answer in answers.items():
        if answer.answered:
            problem = _citation_problem(answer, context_sets.get(query_id))
            if problem is not None:
                problems.append((query_id, problem))
    return CitationAccount(
        answered=sum(answer.answered for answer in answers.values()),
        abstentions=sum(not answer.answered and not answer.failed for answer in answers.values()),
        failed=sum(answer.failed for answer in answers.values()),
        problems=tuple(problems),
    )


@dataclass(frozen=True)
class PublicationAccount:
    """How the answers stand against the newest context sets.

    ``mismatched`` are published answers whose context set has other content (the view must never
    show one); ``stale`` are answers of the newest run computed from a context set since replaced
    (hidden by the view); ``missing`` are context sets the newest run did not answer.
    """

    context_sets: int
    published: int
    mismatched: tuple[str, ...]
    stale: tuple[str, ...]
    missing: tuple[str, ...]

    @property
    def current(self) -> bool:
        return not (self.mismatched or self.stale or self.missing)

    def metadata(self) -> dict[str, Any]:
        rows = (
            [(query_id, "published beside a context set it was not computed from") for query_id in self.mismatched]
            + [(query_id, "computed from an earlier context set: not published") for query_id in self.stale]
            + [(query_id, "no answer") for query_id in self.missing]
        )
        return {
            "context_sets": self.context_sets,
            "answers_published": self.published,
            "published_for_another_context_set": len(self.mismatched),
            "answers_of_replaced_context_sets": len(self.stale),
            "context_sets_without_answer": len(self.missing),
            "problems": _problems_table(rows),
        }


def publication_account(
    published: Mapping[str, Answer], newest_run: Mapping[str, Answer], context_sets: Mapping[str, ContextSet]
) -> PublicationAccount:
    """``published``: the answers view; ``newest_run``: the newest run's answers as stored; ``context_sets``:
    the newest context sets."""
    hashes = {query_id: context_set.content_hash() for query_id, context_set in context_sets.items()}
    return PublicationAccount(
        context_sets=len(context_sets),
        published=len(published),
        mismatched=tuple(q for q, answer in published.items() if hashes.get(q) != answer.context_set_hash),
        stale=tuple(q for q, answer in newest_run.items() if hashes.get(q) != answer.context_set_hash),
        missing=tuple(q for q in hashes if q not in newest_run),
    )


def markdown_preview(answers: Sequence[Answer], *, limit: int = 5, width: int = 400) -> Markdown:
    """The first ``limit`` answers, each under its question with its cited sources, for the Dagster UI."""
    sections = []
    for answer in answers[:limit]:
        if answer.failed:
            body = f"*failed ({answer.error}): no answer is published in its place*"
        else:
            body = " ".join((answer.answer or "").split())[:width]
        sources = "; ".join(f"[{c['number']}] <{c['url']}>" for c in answer.citations) or "none"
        sections.append(f"**{answer.query_id}**: {answer.query}\n\n{body}\n\nSources: {sources}")
    if len(answers) > limit:
        sections.append(f"… {len(answers) - limit} more in answers.jsonl")
    return Markdown("\n\n---\n\n".join(sections) or "none")
