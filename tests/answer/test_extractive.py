"""The extractive answerer: cited sentences of the passages, or NOT IN THE DOCS, the same every time."""

from __future__ import annotations

import pytest

from pipeline.answer.citations import Citation, is_abstention, parse_answer
from pipeline.answer.extractive import (
    DEFAULT_THRESHOLD,
    EXTRACTIVE_MODEL,
    EXTRACTIVE_RULES_VERSION,
    ExtractiveChatModel,
    NotACitedAnswerPrompt,
)
from pipeline.answer.prompt import build_messages, numbered_passages
from pipeline.answer.protocol import GenerationSettings
from pipeline.tokens import count_tokens
from tests.answer.passages import ANSWERED, NOT_COVERED, PASSAGES, messages

SETTINGS = GenerationSettings()


def test_an_answer_is_the_best_matching_sentences_each_with_its_passage_number():
    completion = ExtractiveChatModel().complete(messages(ANSWERED), SETTINGS)

    # Three of the question's five terms (connection, pooling, database); the pool size sentence has two.
    assert completion.text == (
        "Connection pooling reuses open database connections instead of opening one per request. [1]"
    )
    parsed = parse_answer(completion.text, PASSAGES)
    assert parsed.answered and parsed.unresolved == ()
    assert parsed.citations == (Citation(1, "c1", "https://docs.example/pooling"),)
    assert (completion.model, completion.finish_reason) == (EXTRACTIVE_MODEL, "stop")


def test_a_question_the_passages_do_not_cover_is_an_abstention_naming_what_is_missing():
    text = ExtractiveChatModel().complete(messages(NOT_COVERED), SETTINGS).text

    assert is_abstention(text) and not parse_answer(text, PASSAGES).answered
    assert text == "NOT IN THE DOCS: the 3 passages do not mention stream, results, kafka."
    assert parse_answer(text, PASSAGES).citations == ()


def test_the_threshold_decides_between_answering_and_abstaining():
    # The passages hold part of this question's weight ("pool", "size"), not "dyno count" as asked about Redis.
    question = "What pool size does Redis need?"
    assert not is_abstention(ExtractiveChatModel(threshold=0.3).complete(messages(question), SETTINGS).text)
    assert is_abstention(ExtractiveChatModel().complete(messages(question), SETTINGS).text)


def test_page_questions_and_instructions_in_a_passage_are_never_the_answer():
    text = ExtractiveChatModel().complete(messages("How big should the pool be?"), SETTINGS).text

    # The FAQ's own question is skipped; its "instruction" is at most quoted as data, never obeyed.
    assert "How big should the pool be?" not in text
    assert not text.startswith("The pool size does not matter")


def test_the_same_prompt_gets_the_same_answer():
    model = ExtractiveChatModel()
    assert len({model.complete(messages(ANSWERED), SETTINGS).text for _ in range(3)}) == 1


def test_tokens_are_counted_with_cl100k_and_the_answer_is_cut_to_max_completion_tokens():
    sent = messages(ANSWERED)
    full = ExtractiveChatModel().complete(sent, SETTINGS)
    cut = ExtractiveChatModel().complete(sent, GenerationSettings(max_completion_tokens=5))

    assert full.prompt_tokens == sum(count_tokens(message["content"]) for message in sent)
    assert full.completion_tokens == count_tokens(full.text)
    assert (cut.completion_tokens, cut.finish_reason) == (5, "length") and full.text.startswith(cut.text)


def test_a_conversation_not_built_as_our_prompt_is_refused_clearly():
    with pytest.raises(NotACitedAnswerPrompt, match="no <question> block"):
        ExtractiveChatModel().complete([{"role": "user", "content": "Hello there"}], SETTINGS)


def test_a_threshold_outside_its_range_is_refused():
    with pytest.raises(ValueError, match="threshold must be within"):
        ExtractiveChatModel(threshold=0)
    # Its cache identity names the rules, so answers cached under other rules are not served.
    assert ExtractiveChatModel().model == f"extractive-answerer@rules-{EXTRACTIVE_RULES_VERSION}"


def _answer(question: str, *texts: str, threshold: float = DEFAULT_THRESHOLD) -> str:
    """The extractive answer to ``question`` from passages holding ``texts``, numbered from 1."""
    passages = numbered_passages(
        [
            {"chunk_id": f"c{n}", "url": f"https://docs.example/{n}", "title": "Guide", "text": text}
            for n, text in enumerate(texts, start=1)
        ]
    )
    return ExtractiveChatModel(threshold=threshold).complete(build_messages(question, passages), SETTINGS).text


INCREMENTAL = (
    "Later crawls are conditional, so a page that has not changed is not downloaded again. "
    "The first crawl of a source fetches every page it can reach."
)
PRIVATE_HOSTS = (
    "The crawler refuses hosts that resolve to a private address, such as one on a 10.0.0.0/8 network. "
    "Set allow_private_hosts: true on a source whose pages live on an internal network."
)


def test_contractions_and_single_letters_are_not_words_the_passages_must_hold():
    # "haven't" is "have not", both stop words: the passages need not hold "haven" or "t".
    assert _answer("Do pages that haven't changed get downloaded again?", INCREMENTAL, PRIVATE_HOSTS) == (
        "Later crawls are conditional, so a page that has not changed is not downloaded again. [1]"
    )
    # Nor "won" and "t", nor the "x" of "10.x"; "crawler's" is "crawler".
    assert _answer(
        "Why won't the crawler's fetch reach pages on a 10.x address?", INCREMENTAL, PRIVATE_HOSTS
    ).startswith(
        "The crawler refuses hosts that resolve to a private address, such as one on a 10.0.0.0/8 network. [2]"
    )
    # And an abstention names the words that are missing, not the fragments.
    assert _answer("Why won't it fetch our Kafka topics?", INCREMENTAL, PRIVATE_HOSTS) == (
        "NOT IN THE DOCS: the 2 passages do not mention kafka, topics."
    )


def test_one_rare_word_the_passages_lack_does_not_tip_a_question_they_answer():
    # "wiki" is in no passage, and weighs the most; the question's other five words are there.
    text = _answer("Why won't the crawler fetch pages from our internal wiki on a private address?", PRIVATE_HOSTS)

    assert not is_abstention(text) and text.endswith("[1]")


FORMAT_EXAMPLE = (
    "Each line of the output file is one JSON object. A shortened line looks like this:\n"
    '{"query_id": "q07", "query": "What does a 403 from the rerank endpoint mean?",\n'
    ' "model": "cohere-rerank-3-5", "reranked": true, "api_version": "2",'
)
STATUS_TABLE = (
    "Status | Meaning | Pipeline behaviour\n"
    "403 | The rerank endpoint refuses the model for this key. | Not retried.\n"
    "A 403 means the rerank key is valid but may not use the model that RERANK_MODEL_ID names."
)


def test_lines_of_code_and_table_rows_are_not_quoted_while_a_prose_sentence_matches():
    assert _answer("What does a 403 from the rerank endpoint mean?", FORMAT_EXAMPLE, STATUS_TABLE) == (
        "A 403 means the rerank key is valid but may not use the model that RERANK_MODEL_ID names. [2]"
    )


def test_a_table_row_or_command_is_quoted_when_nothing_else_matches():
    table = "Variable | Default | Description\nCHROMA_PORT | 8000 | Port of the Chroma server."
    command = "Start it like this:\n  docker run -d --name chroma -p 8000:8000 chromadb/chroma"

    assert _answer("Which port does the Chroma server listen on by default?", table, INCREMENTAL) == (
        "CHROMA_PORT | 8000 | Port of the Chroma server. [1]"
    )
    assert _answer("How do I run chromadb in docker?", command, INCREMENTAL) == (
        "docker run -d --name chroma -p 8000:8000 chromadb/chroma [1]"
    )


RATE_LIMIT_FAQ = (
    "The client backs off and retries, waiting as long as the Retry-After header asks. "
    "A run slows down rather than failing. If it happens while the service is down, read Rate limits."
)
RERANK_FAILURES = (
    "A question whose rerank request fails after all retries keeps its passages in retrieval order, "
    "with reranked set to false. Reranking scores every question's candidates with the rerank model. "
    "Every reranked question records the rerank model. The rerank cache keeps each question's scores."
)


def test_a_sentence_that_leans_on_another_or_points_elsewhere_is_not_the_answer():
    text = _answer("What happens to a question when the reranker is down?", RATE_LIMIT_FAQ, RERANK_FAILURES)

    # The last FAQ sentence holds "happens" and "down", the rarest words, but its subject is "it" and it
    # sends the reader elsewhere; the short one before it holds "down" and says little on its own.
    assert text.startswith(
        "A question whose rerank request fails after all retries keeps its passages in retrieval order, "
        "with reranked set to false. [2]"
    )
    assert "If it happens" not in text and "A run slows down" not in text
