"""The offline answerer: the passages' own sentences that best match the question, each with its ``[n]``.

No language model runs here, so nothing is written that the passages do not say word for word,
and no text inside them is ever followed as an instruction: :class:`ExtractiveChatModel` reads the
question and the passages back from the prompt's data blocks (:func:`~pipeline.answer.prompt.read_prompt_data`),
and either abstains with a line starting ``NOT IN THE DOCS:``, as the prompt asks a model to, or
answers with the one to three passage sentences that match the question best, each followed by
the number of the passage it comes from.

Words are the pipeline's lexical terms (:func:`pipeline.store.bm25.analyze`: lower-cased,
stemmed) without the function words of a question (:data:`STOP_WORDS`), contraction fragments and
single characters. Each question term weighs its inverse sentence frequency over the passages, so a
term that most sentences share ("rerank" in a guide to reranking) counts for little and a term that
no passage contains counts the most. Whether to answer is decided over all passages together (the
share of the question's weight they contain), since a question's words are often spread over
neighbouring sentences; which sentences to quote, one sentence at a time: prose before lines of code
and table rows, sentences holding more of the question first, short and referential ones last.

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
from pipeline.store.bm25 import analyze as lexical_terms
from pipeline.tokens import count_tokens, truncate_to_tokens

EXTRACTIVE_MODEL = "extractive-answerer"
# Part of the answerer's cache identity (``model``): bump it when the answering rules change, so the
# answer cache does not keep serving what the old rules wrote.
EXTRACTIVE_RULES_VERSION = 2
# The passages must hold at least this share of the question's weight to be answered from. A
# question about something the passages never name misses its rarest, heaviest words, so it stays
# below 0.6 even when it shares the common words of the site; a question the passages answer holds
# most of its words, and one rare word it lacks ("wiki" in "...our internal wiki on a 10.x address?")
# leaves it at 0.75. On the demo's context sets, the labelled questions all reach 0.75 and the
# questions the guide does not answer (unanswerable_queries.yaml: Helm, Terraform, Slack, ...) stay
# at 0.54 or under.
DEFAULT_THRESHOLD = 0.6
MAX_SENTENCES = 3
# A further sentence joins the answer only if it scores at least this share of the best one's.
FOLLOWER_SHARE = 0.6
# Shorter lines are headings and table cells: they name a topic and say nothing about it.
MIN_SENTENCE_WORDS = 5
# A sentence of fewer words than this says little more than a heading ("A run slows down rather than
# failing."): its score shrinks in proportion, so a fuller sentence with the same words is quoted first.
FULL_SENTENCE_WORDS = 8
# A sentence that leans on another for its subject ("If it happens on every run, ...", "They mean ...")
# or sends the reader elsewhere ("read Rate limits", "see Schedules") means little quoted on its own:
# it keeps this share of its score, so it is quoted only when it matches twice as much as the others.
REFERENTIAL_SHARE = 0.5
# Words that say how a question is asked, not what it is about (the lexical analyzer keeps most of them).
STOP_WORDS = frozenset(
    "a about after again all also an and any are as at be been before but by can cannot could did do does doing "
    "during each every for from get gets getting got had has have how i if in into is it its just many me more "
    "most much my no not of on only or other our out should so some than that the their them then there these "
    "they this those to too us very was we were what when where which who why will with would you your".split()
)
# Words that point back at something said before them: as a sentence's subject, it is that something.
_REFERRING = frozenset("it its this that these those they them their such".split())
# Words that open a clause before its subject ("If it ...", "When this ...").
_CLAUSE_OPENERS = frozenset("and but if once since so then when while because".split())
# "haven't", "won't", "can't": an auxiliary and "not", all stop words, which the split at the
# apostrophe would turn into the words "haven", "won", "ca" and "t".
_NEGATED_AUXILIARY = re.compile(r"\w+n['’]t\b", re.IGNORECASE)
# "crawler's", "we're", "you've", "it'll", "they'd", "I'm": the word before the apostrophe is the word.
_CONTRACTED_ENDING = re.compile(r"['’](?:s|re|ve|ll|d|m)\b", re.IGNORECASE)
# A sentence that only sends the reader elsewhere: "See Schedules.", "Read Rate limits first."
_POINTER = re.compile(r"(?:see|read)\b", re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
# How a sentence ends: its stop, maybe inside closing quotes or brackets. Commands, YAML and code
# lines, table cells and headings end without one.
_SENTENCE_STOP = re.compile(r"""[.!?:;]["'”’)\]`]*$""")
_LIST_MARKER = re.compile(r"^(?:[-*•]|\d+[.)])\s+")
# Letters and digits: an identifier's parts are words of their own (REFRESH_CRON is about "refresh").
_WORD = re.compile(r"[^\W_]+")


class NotACitedAnswerPrompt(ValueError):
    """The conversation has no question block: it was not built by :func:`~pipeline.answer.prompt.build_messages`."""


@dataclass(frozen=True)
class _Sentence:
    number: int
    text: str
    terms: frozenset[str]
    # A sentence of a paragraph or list item, not a line of code or a table row: quoted first.
    prose: bool
    # The share of its matched weight it keeps (short and referential sentences keep less).
    quality: float


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
        self.threshold = threshold
        self._analyze: Callable[[str], list[str]] = analyze or lexical_terms

    def __repr__(self) -> str:
        return f"ExtractiveChatModel(threshold={self.threshold:g})"

    @property
    def model(self) -> str:
        return f"{EXTRACTIVE_MODEL}@rules-{EXTRACTIVE_RULES_VERSION}"

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
            _Sentence(number, sentence, self._terms(sentence), prose, _quality(sentence))
            for number, _title, _url, text in data.passages
            for sentence, prose in _sentences(text)
        ]
        weights = _weights(question, sentences)
        total = sum(weights.values())
        found = frozenset().union(*(sentence.terms for sentence in sentences)) & question
        if not total or sum(weights[term] for term in found) / total < self.threshold:
            missing = [word for word in _words(data.question) if self._terms(word) - found]
            return (
                f"{NOT_IN_THE_DOCS} the {len(data.passages)} passages do not mention "
                f"{', '.join(dict.fromkeys(missing)) or 'what the question asks'}."
            )
        # Lines of code and table rows are quoted only when no prose sentence shares a word with the
        # question: a JSON line that repeats an example question matches it, and says nothing about it.
        matching = [sentence for sentence in sentences if question & sentence.terms]
        quotable = [sentence for sentence in matching if sentence.prose] or matching
        scored = sorted(
            (
                (_score(question & sentence.terms, weights) * sentence.quality, position, sentence)
                for position, sentence in enumerate(quotable)
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
        return frozenset(self._analyze(" ".join(_words(text))))


def _words(text: str) -> list[str]:
    """The lower-cased words of ``text`` that say what it is about: contractions resolved, without
    :data:`STOP_WORDS` and single characters (the "x" of "10.x" or a stray "t" name nothing)."""
    text = _CONTRACTED_ENDING.sub("", _NEGATED_AUXILIARY.sub(" ", text.lower()))
    return [word for word in _WORD.findall(text) if len(word) > 1 and word not in STOP_WORDS]


def _sentences(text: str) -> list[tuple[str, bool]]:
    """The statements of ``text``, each with whether it is prose (see :func:`_is_code_or_table`).

    A question the page asks (a FAQ's heading) repeats the user's words and answers nothing, and
    headings are too short. List markers are dropped: the quote is the item's sentence.
    """
    found = []
    for line in text.splitlines():
        if _is_code_or_table(line):
            found.append((line.strip(), False))
            continue
        for sentence in _SENTENCE_END.split(_LIST_MARKER.sub("", line.strip())):
            found.append((sentence, bool(_SENTENCE_STOP.search(sentence))))
    return [
        (sentence, prose)
        for sentence, prose in found
        if len(sentence.split()) >= MIN_SENTENCE_WORDS and not sentence.endswith("?")
    ]


def _is_code_or_table(line: str) -> bool:
    """Whether a whole line is a table row (cells joined by " | "), or code: code blocks keep their
    indentation and JSON lines open with a bracket, where paragraphs and list items start at the margin
    with a word. (A line of code at the margin, a command, ends without a sentence's stop: see
    :func:`_sentences`.)"""
    return " | " in line or line[:1].isspace() or line.lstrip().startswith(("{", "}", "[", "]"))


def _quality(sentence: str) -> float:
    """The share of its matched weight a sentence keeps: less when it is short (:data:`FULL_SENTENCE_WORDS`)
    or referential (:data:`REFERENTIAL_SHARE`): its subject is a word like "it" or "this", it sends the
    reader elsewhere, or it ends with a colon, announcing what it does not say itself."""
    words = _WORD.findall(sentence.lower())
    subject = words[1:2] if words[:1] and words[0] in _CLAUSE_OPENERS else words[:1]
    referential = bool(_REFERRING.intersection(subject)) or bool(_POINTER.match(sentence)) or sentence.endswith(":")
    return min(1.0, len(words) / FULL_SENTENCE_WORDS) * (REFERENTIAL_SHARE if referential else 1.0)


def _weights(question: frozenset[str], sentences: Sequence[_Sentence]) -> dict[str, float]:
    """Each question term's inverse sentence frequency: from log 2 (in every sentence) to log(n + 2) (in none)."""
    count = len(sentences)
    return {
        term: math.log(1 + (count + 1) / (1 + sum(term in sentence.terms for sentence in sentences)))
        for term in question
    }


def _score(matched: frozenset[str], weights: Mapping[str, float]) -> float:
    """How well a sentence matches: the weight of the question terms it holds, times how many it holds.
    Summed weight alone lets one rare word ("happens") outscore a sentence holding the question's
    subject ("question" and "reranker", common in a context set about reranking); the count favours
    the sentence that holds more of the question."""
    return sum(weights[term] for term in matched) * len(matched)
