"""Held-out estimates for choosing among rankings on the same labelled questions.

Choosing the best of many rankings (chunk variants, page-signal weights) on a set of questions
is itself fitting: the winner's score on those questions flatters it. :func:`halves` splits the
questions in two seeded halves, one to choose on and one to report on. One split of 172
questions is noisy (the PostgreSQL set's seed-18 halves differ by 0.2 nDCG@10 in difficulty), so
:func:`held_out_gain` repeats the choice over many seeded splits, both ways round, and reports
the mean and spread of what the chosen ranking gains over a baseline on the questions it was
not chosen on: the gain to expect on questions nobody has seen.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from statistics import fmean, pstdev

# ranking name → query ID → a per-question score (e.g. nDCG@10)
PerQuestion = Mapping[str, Mapping[str, float]]


def halves(question_ids: Iterable[str], seed: int) -> dict[str, set[str]]:
    """The question IDs split in two seeded halves: one to choose a ranking on, one to report it on."""
    ids = sorted(question_ids)
    random.Random(seed).shuffle(ids)
    middle = len(ids) // 2
    return {"selection": set(ids[:middle]), "report": set(ids[middle:]), "all": set(ids)}


def chosen(scores: PerQuestion, candidates: Sequence[str], questions: set[str]) -> str:
    """The candidate with the best mean over ``questions``; a tie goes to the earlier candidate."""
    return max(candidates, key=lambda name: (_mean(scores[name], questions), -candidates.index(name)))


@dataclass(frozen=True)
class HeldOutGain:
    mean: float  # mean over splits of (chosen − baseline) on the half it was not chosen on
    spread: float  # population standard deviation of that gain over the splits
    splits: int
    picks: dict[str, int]  # candidate → how many splits chose it


def held_out_gain(scores: PerQuestion, candidates: Sequence[str], baseline: str, seeds: int) -> HeldOutGain:
    """Over ``seeds`` seeded splits, each used both ways round: choose among ``candidates`` on one half,
    and measure the choice against ``baseline`` on the other."""
    if not candidates:
        raise ValueError("no candidates to choose among")
    questions = scores[baseline].keys()
    gains: list[float] = []
    picks: Counter[str] = Counter()
    for seed in range(seeds):
        split = halves(questions, seed)
        for choose_on, report_on in (("selection", "report"), ("report", "selection")):
            pick = chosen(scores, candidates, split[choose_on])
            picks[pick] += 1
            gains.append(_mean(scores[pick], split[report_on]) - _mean(scores[baseline], split[report_on]))
    return HeldOutGain(fmean(gains), pstdev(gains), len(gains), dict(picks.most_common()))


def _mean(per_question: Mapping[str, float], questions: set[str]) -> float:
    return fmean(per_question[question] for question in questions)
