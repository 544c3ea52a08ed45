"""Questions asked now, against the current index: their context sets and cited answers, without a run.

``pipeline ask`` asks one question this way, the answer evaluation its labelled and unanswerable sets.
A question takes the assets' code paths with their default knobs (:class:`~pipeline.ranking.RankingPlan`):
hybrid retrieval (``retrieve_candidates``), the rerank client through the durable rerank cache
(``rerank_candidates``; a question of the queries file whose candidates are unchanged bills nothing),
the per-page cap and token-budget packing (``query_context_set``), and the answers asset's
``answer_context_sets`` through the chat model and the durable answer cache (the same question on the
same context set spends no tokens the second time). Both are kept in memory: nothing is written to the
queries, candidates, rankings, context-set or answers tables, so the next run publishes exactly what it
would have. Only the rerank and answer caches may gain an entry, as they would from a run asking the same.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pipeline.answer.answering import AnswerOutcome, AnswerReport, AnswerStats, StoreAnswerCache, answer_context_sets
from pipeline.answer.protocol import ChatModel, GenerationSettings
from pipeline.embedding import Embedder
from pipeline.queries import query_entry_problem
from pipeline.ranking import RankingPlan, RerankRunReport, StoreRerankCache, query_context_set, rerank_candidates
from pipeline.rerank.client import RerankClient
from pipeline.retrieve import SearchIndexes, page_sizes_for, retrieve_candidates
from pipeline.store.records import Candidate, ContextSet, Query
from pipeline.store.state import StateStore

# The query ID of the asked question in its context set (and in rerank requests and errors).
ASK_QUERY_ID = "ask"


class QuestionError(ValueError):
    """The question cannot be asked (empty, too long, a control character); the message says why."""


@dataclass(frozen=True)
class AskedContextSet:
    context_set: ContextSet
    rerank: RerankRunReport  # what reranking billed (nothing on a cache hit) and, when it failed, why


@dataclass(frozen=True)
class AskedQuestion:
    """A question's context set and the answer written from it."""

    context: AskedContextSet
    answer: AnswerOutcome  # a failed answer has an error code and no text; ``detail`` says why

    @property
    def answer_stats(self) -> AnswerStats:
        """What the answer spent: no tokens and one cache hit when it came from the answer cache."""
        return AnswerStats.from_outcomes([self.answer])


@dataclass(frozen=True)
class Asker:
    """The handles a question is asked through: those of the assets (resources set up outside a run)."""

    store: StateStore
    indexes: SearchIndexes
    embedder: Embedder
    client: RerankClient
    chat: ChatModel
    generation: GenerationSettings
    redact: Callable[[str], str]  # every configured secret out of the prompt, as in a run
    plan: RankingPlan = RankingPlan()

    def context_sets(
        self, queries: Sequence[Query], *, max_workers: int = 1
    ) -> tuple[list[ContextSet], RerankRunReport]:
        """Each query's context set, in their order, as a run would publish it were the query in the queries file,
        and what reranking billed. Raises the rerank client's configuration errors (a refused key or model) as a
        run would fail on them."""
        plan = self.plan
        hits = retrieve_candidates(
            queries,
            self.indexes.vectors,
            self.embedder,
            plan.top_k,
            lexical=self.indexes.lexical,
            fusion=plan.fusion,
            page_sizes=page_sizes_for(plan.fusion, self.store),
        )
        candidates = {
            query_id: [Candidate(rank, hit.chunk_id, hit.score) for rank, hit in enumerate(found, start=1)]
            for query_id, found in hits.items()
        }
        chunk_rows = self.store.chunks.by_id(c.chunk_id for ranked in candidates.values() for c in ranked)
        rankings, report = rerank_candidates(
            {query.query_id: query.query for query in queries},
            candidates,
            chunk_rows,
            self.client,
            top_n=None,
            max_workers=max_workers,
            cache=StoreRerankCache(self.store),
        )
        by_query = {ranking.query_id: ranking for ranking in rankings}
        context_sets = [
            query_context_set(
                query,
                candidates[query.query_id],
                by_query.get(query.query_id),
                chunk_rows,
                embedding_model=self.indexes.vectors.model,
                token_budget=plan.token_budget,
                max_passages_per_page=plan.max_passages_per_page,
            )
            for query in queries
        ]
        return context_sets, report

    def answers(self, context_sets: Sequence[ContextSet], *, max_workers: int = 1) -> AnswerReport:
        """The context sets answered as the answers asset answers them (through the durable answer cache).

        A failed completion is an answer with an error and no text, as in a run; a rejected key or chat
        model raises :class:`~pipeline.inference.InferenceConfigurationError`.
        """
        return answer_context_sets(
            context_sets,
            self.chat,
            self.generation,
            cache=StoreAnswerCache(self.store),
            redact=self.redact,
            max_workers=max_workers,
        )

    def context_set(self, question: str) -> AskedContextSet:
        """The question's context set (see :meth:`context_sets`), under the query ID :data:`ASK_QUERY_ID`.

        Raises :class:`QuestionError` for a question the queries file would refuse.
        """
        problem = query_entry_problem(ASK_QUERY_ID, question)
        if problem:
            raise QuestionError(problem.replace(f" (id {ASK_QUERY_ID!r})", "").replace("'query'", "the question"))
        [context_set], report = self.context_sets([Query(ASK_QUERY_ID, question.strip())])
        return AskedContextSet(context_set, report)

    def ask(self, question: str) -> AskedQuestion:
        """The question's context set (see :meth:`context_set`) answered (see :meth:`answers`)."""
        asked = self.context_set(question)
        return AskedQuestion(asked, self.answers([asked.context_set]).outcomes[0])
