"""The offline answerer: the passages' own sentences that best match the question, each with its ``[n]``.

No language model runs here, so nothing is written that the passages do not say word for word,
and no text inside them is ever followed as an instruction: :class:`ExtractiveChatModel` reads the
question and the passages back from the prompt's data blocks (:func:`~pipeline.answer.prompt.read_prompt_data`),
and either abstains with a line starting ``NOT IN THE DOCS:``, as the prompt asks a model to, or
answers with the one to three passage sentences that match the question best, each followed by
the number of the passage it comes from.

Words are the pipeline's lexical terms (:func:`pipeline.store.lexical.analyze`: lower-cased,
stemmed) without the function words of a question (:data:`STOP_WORDS`). Each question term weighs
its inverse sentence frequency over the passages, so a term that most sentences share ("rerank" in
a guide to reranking) counts for little and a term that no passage contains counts the most.
Whether to answer is decided over all passages together (the share of the question's weight they
contain), since a question's words are often spread over neighbouring sentences; which sentences
to quote, one sentence at a time.

Its name, :data:`EXTRACTIVE_MODEL`, says what it is wherever it shows (answers, caches, the stand-in's
responses); nothing here pretends to be the model a deploy attaches.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from pipeline.answer.prompt import NOT_IN_THE_DOCS, PromptData, read_prompt_data
from pipeline.answer.protocol import Completion, GenerationSettings
from pipeline.tokens import count_tokens, truncate_to_tokens

EXTRACTIVE_MODEL = "extractive-answerer"
# The passages must hold at least this share of the question's weight to be answered from. A
# question about something the passages never name misses its rarest, heaviest words, so it stays
# below 0.6 even when it shares the common words of the site; a question the passages answer holds
# most of its words. On the demo site's labelled questions (their grade-2 pages as passages) nearly
# all reach 0.6, and questions about things the guide does not cover (Kafka, Slack, YouTube,
# Kubernetes) stay under it.
DEFAULT_THRESHOLD = 0.6
MAX_SENTENCES = 3
# A further sentence joins the answer only if it scores at least this share of the best one's.
FOLLOWER_SHARE = 0.6
# Shorter lines are headings and table cells: they name a topic and say nothing about it.
MIN_SENTENCE_WORDS = 5
# Words that say how a question is asked, not what it is about (the lexical analyzer keeps them).
STOP_WORDS = frozenset(
    "a an and are as at be been but by can could did do does doing for from get gets getting got had has have how "
    "i if in into is it its me my no not of on or our out should so than that the their them then there these they "
    "this those to too us was we were what when where which who why will with would you your".split()
)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
_WORD = re.compile(r"\w+")


class NotACitedAnswerPrompt(ValueError):
    """The conversation has no question block: it was not built by :func:`~pipeline.answer.prompt.build_messages`."""


@dataclass(frozen=True)
class _Sentence:
    number: int
    text: str
    terms: frozenset[str]


class ExtractiveChatModel:
    """A :class:`~pipeline.answer.protocol.ChatModel` that answers from the prompt's passages alone, in process.

    Deterministic: the same prompt always gets the same answer. ``analyze`` turns text into terms
    (default: the pipeline's lexical analyzer); ``threshold`` is the score below which it abstains.
    """

    def __init__(
        self, *, threshold: float = DEFAULT_THRESHOLD, analyze: Callable[[str], list[str]] | None = None
    ) -> None:
        if not 0 < threshold <= 1:
            raise ValueError(f"threshold must be within (0, 1], got {threshold}")
        if analyze is None:
            # Imported here: the lexical module brings the state store with it, which a caller passing
            # its own analyzer does not need.
            from pipeline.store.lexical import analyze as lexical_terms

            analyze = lexical_terms
        self.threshold = threshold
        self._analyze: Callable[[str], list[str]] = analyze

    def __repr__(self) -> str:
        return f"ExtractiveChatModel(threshold={self.threshold:g})"

    @property
    def model(self) -> str:
        return EXTRACTIVE_MODEL

    def complete(self, messages: Sequence[Mapping[str, str]], settings: GenerationSettings) -> Completion:
        """The answer to the prompt's question; raises :class:`NotACitedAnswerPrompt` for any other conversation."""
        data = read_prompt_data(messages)
        if data is None:
            raise NotACitedAnswerPrompt(
                "the conversation has no <question> block: the extractive answerer only answers prompts built "
                "by pipeline.answer.prompt.build_messages (a question and numbered passages)"
            )
        text = self.answer(data)
        cut = truncate_to_tokens(text, settings.max_completion_tokens)
        return Completion(
            text=cut,
            model=EXTRACTIVE_MODEL,
            prompt_tokens=sum(count_tokens(message.get("content", "")) for message in messages),
            completion_tokens=count_tokens(cut),
            finish_reason="stop" if cut == text else "length",
        )

    def answer(self, data: PromptData) -> str:
        """The cited sentences, or the abstention line."""
        question = self._terms(data.question)
        sentences = [
            _Sentence(number, sentence, self._terms(sentence))
            for number, _title, _url, text in data.passages
            for sentence in _sentences(text)
        ]
        weights = _weights(question, sentences)
        total = sum(weights.values())
        found = frozenset().union(*(sentence.terms for sentence in sentences)) & question
        if not total or sum(weights[term] for term in found) / total < self.threshold:
            missing = [word for word in _WORD.findall(data.question) if self._terms(word) - found]
            return (
                f"{NOT_IN_THE_DOCS} the {len(data.passages)} passages do not mention "
                f"{', '.join(dict.fromkeys(word.lower() for word in missing)) or 'what the question asks'}."
            )
        scored = sorted(
            (
                (sum(weights[term] for term in question & sentence.terms), position, sentence)
                for position, sentence in enumerate(sentences)
            ),
            key=lambda item: (-item[0], item[1]),
        )
        best = scored[0][0]
        chosen: list[_Sentence] = []
        for score, _position, sentence in scored:
            if len(chosen) == MAX_SENTENCES or score < best * FOLLOWER_SHARE:
                break
            if all(sentence.text != earlier.text for earlier in chosen):
                chosen.append(sentence)
        return " ".join(f"{sentence.text} [{sentence.number}]" for sentence in chosen)

    def _terms(self, text: str) -> frozenset[str]:
        return frozenset(self._analyze(" ".join(w for w in _WORD.findall(text.lower()) if w not in STOP_WORDS)))


def _sentences(text: str) -> list[str]:
    """The statements of ``text``: a question the page asks (a FAQ's heading) repeats the user's words and
    answers nothing, and headings are too short."""
    sentences = (sentence.strip() for sentence in _SENTENCE_END.split(text))
    return [
        sentence for sentence in sentences if len(sentence.split()) >= MIN_SENTENCE_WORDS and not sentence.endswith("?")
    ]


def _weights(question: frozenset[str], sentences: Sequence[_Sentence]) -> dict[str, float]:
    """Each question term's inverse sentence frequency: from log 2 (in every sentence) to log(n + 2) (in none)."""
    count = len(sentences)
    return {
        term: math.log(1 + (count + 1) / (1 + sum(term in sentence.terms for sentence in sentences)))
        for term in question
    }
