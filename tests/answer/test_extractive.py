"""The extractive answerer: cited sentences of the passages, or NOT IN THE DOCS, the same every time."""

from __future__ import annotations

import pytest

from pipeline.answer.citations import Citation, is_abstention, parse_answer
from pipeline.answer.extractive import EXTRACTIVE_MODEL, ExtractiveChatModel, NotACitedAnswerPrompt
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
    assert ExtractiveChatModel().model == "extractive-answerer"
