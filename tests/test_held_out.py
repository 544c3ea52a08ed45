import pytest

from pipeline.evaluation.held_out import chosen, halves, held_out_gain

QUESTIONS = [f"q{n:02d}" for n in range(20)]


def test_halves_are_disjoint_cover_every_question_and_follow_the_seed():
    split = halves(QUESTIONS, 18)
    assert split["selection"] | split["report"] == split["all"] == set(QUESTIONS)
    assert not split["selection"] & split["report"]
    assert len(split["selection"]) == len(split["report"]) == 10
    assert halves(reversed(QUESTIONS), 18) == split  # the order questions come in does not matter
    assert halves(QUESTIONS, 19) != split


def test_the_choice_is_the_best_mean_on_the_given_questions_ties_to_the_earlier():
    scores = {"a": {"q1": 0.2, "q2": 1.0}, "b": {"q1": 0.8, "q2": 0.3}, "c": {"q1": 0.8, "q2": 0.3}}
    assert chosen(scores, ["a", "b", "c"], {"q1"}) == "b"
    assert chosen(scores, ["a", "b", "c"], {"q1", "q2"}) == "a"
    assert chosen(scores, ["c", "b"], {"q1"}) == "c"


def test_a_ranking_better_on_every_question_gains_its_margin_held_out():
    baseline = dict.fromkeys(QUESTIONS, 0.5)
    scores = {"base": baseline, "better": dict.fromkeys(QUESTIONS, 0.6), "worse": dict.fromkeys(QUESTIONS, 0.4)}
    gain = held_out_gain(scores, ["worse", "better"], "base", seeds=5)
    assert gain.mean == pytest.approx(0.1)
    assert gain.spread == pytest.approx(0.0)
    assert gain.splits == 10
    assert gain.picks == {"better": 10}


def test_a_ranking_that_only_wins_on_the_questions_it_is_chosen_on_gains_nothing_held_out():
    # "lucky" is far better on half the questions and far worse on the rest, "steady" equals the baseline:
    # wherever lucky is chosen, it is measured on questions where it loses.
    split = halves(QUESTIONS, 0)
    lucky = {q: (1.0 if q in split["selection"] else 0.0) for q in QUESTIONS}
    scores = {"base": dict.fromkeys(QUESTIONS, 0.5), "lucky": lucky, "steady": dict.fromkeys(QUESTIONS, 0.5)}
    in_sample = sum(lucky[q] for q in split["selection"]) / 10 - 0.5
    assert in_sample == pytest.approx(0.5)
    gain = held_out_gain(scores, ["steady", "lucky"], "base", seeds=1)
    assert gain.picks == {"lucky": 1, "steady": 1}  # chosen on the selection half; on the report half it loses
    assert gain.mean == pytest.approx((-0.5 + 0.0) / 2)


def test_no_candidates_is_refused():
    with pytest.raises(ValueError, match="no candidates"):
        held_out_gain({"base": {"q1": 0.5}}, [], "base", seeds=1)
