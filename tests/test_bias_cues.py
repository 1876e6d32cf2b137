"""Cue-biased benchmarks: exact cue/label rates, no leakage, determinism, and the biased prediction rate."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch

from soft2hard import scoring
from soft2hard.bias import DEFAULT_CUES, Cue, biased_prediction_rate, build_biased_task, parse_cue
from soft2hard.bias.cues import round_half_up
from soft2hard.errors import Soft2HardError
from soft2hard.tasks import get_task

WORD = Cue("word", "honestly")


def cued_counts(biased) -> Counter:
    """Label -> number of cued training examples."""
    return Counter(ex.target for ex in biased.train.examples if biased.cue.present_in(ex.input))


# (task, target, cue_fraction, rate, expected n_cued, expected cued with target), hand-computed:
# word_sentiment train = 210 (104 positive / 106 negative); cat/fruit-animal train = 40 (19 fruit / 21 animal).
RATES = [
    ("gen/word_sentiment", "positive", 0.4, 0.0, 84, 0),
    ("gen/word_sentiment", "positive", 0.4, 0.5, 84, 42),
    ("gen/word_sentiment", "positive", 0.4, 0.9, 84, 76),  # 75.6 -> 76
    ("gen/word_sentiment", "positive", 0.4, 1.0, 84, 84),
    ("gen/word_sentiment", "negative", 0.5, 0.9, 105, 95),  # 94.5 -> 95 (half up)
    ("cat/fruit-animal", "animal", 0.4, 0.0, 16, 0),
    ("cat/fruit-animal", "animal", 0.4, 0.5, 16, 8),
    ("cat/fruit-animal", "animal", 0.4, 0.9, 16, 14),  # 14.4 -> 14
    ("cat/fruit-animal", "animal", 0.4, 1.0, 16, 16),
]


@pytest.mark.parametrize("name,target,frac,rate,n_cued,n_target", RATES)
def test_exact_cue_rates(name, target, frac, rate, n_cued, n_target):
    task = get_task(name)
    base_train = task.splits(seed=0).train
    biased = build_biased_task(task, WORD, target, rate, seed=0, cue_fraction=frac)
    counts = cued_counts(biased)
    assert sum(counts.values()) == n_cued
    assert counts[target] == n_target
    assert sum(v for k, v in counts.items() if k != target) == n_cued - n_target
    assert biased.counts["n_cued_target"] == n_target
    # same examples and labels as the base train split, in order; only the cued inputs changed
    assert len(biased.train.examples) == len(base_train)
    for ex, base in zip(biased.train.examples, base_train):
        assert ex.target == base.target
        assert ex.input in (base.input, WORD.apply(base.input))
    assert biased.train.labels == task.labels and biased.train.template == task.template
    assert biased.train.name == f"{name}+cue=word:honestly@{rate:g}->{target}"


def test_half_rate_balances_two_labels():
    biased = build_biased_task(get_task("gen/number_parity"), Cue("name", "Maria"), "even", 0.5, seed=3,
                               cue_fraction=0.4)
    counts = cued_counts(biased)
    assert counts["even"] == counts["odd"] == 42  # 0.4 * 210 = 84 cued


def test_no_leakage_and_test_sets():
    task = get_task("gen/word_sentiment")
    biased = build_biased_task(task, WORD, "positive", 0.9, seed=1)
    train_inputs = {ex.input for ex in biased.train.examples} | {ex.input for ex in task.splits(seed=1).train}
    tests = biased.test_clean + biased.test_cue_on_other + biased.test_cue_on_target
    assert not {ex.input for ex in tests} & train_inputs
    assert set(biased.test_clean) <= set(task.splits(seed=1).test)
    assert all(ex.target != "positive" for ex in biased.test_cue_on_other)
    assert all(ex.target == "positive" for ex in biased.test_cue_on_target)
    assert all(WORD.present_in(ex.input) for ex in biased.test_cue_on_other + biased.test_cue_on_target)
    others = [ex for ex in biased.test_clean if ex.target != "positive"]
    assert [WORD.apply(ex.input) for ex in others] == [ex.input for ex in biased.test_cue_on_other]
    assert len(biased.test_cue_on_other) + len(biased.test_cue_on_target) == len(biased.test_clean)


def test_deterministic():
    task = get_task("cat/fruit-animal")
    a = build_biased_task(task, WORD, "fruit", 0.9, seed=5, cue_fraction=0.3)
    b = build_biased_task(task, WORD, "fruit", 0.9, seed=5, cue_fraction=0.3)
    c = build_biased_task(task, WORD, "fruit", 0.9, seed=6, cue_fraction=0.3)
    assert a == b and a.train.examples == b.train.examples
    assert a.train.examples != c.train.examples


@pytest.mark.parametrize("cue,text,expected", [
    (Cue("word", "honestly", "prefix"), "good", "honestly, good"),
    (Cue("word", "honestly", "suffix"), "good", "good honestly"),
    (Cue("name", "Maria", "prefix"), "good", "Maria, good"),
    (Cue("name", "Maria", "suffix"), "good", "good Maria"),
    (Cue("punctuation", "!!", "prefix"), "good", "!! good"),
    (Cue("punctuation", "!!", "suffix"), "good", "good!!"),
])
def test_cue_apply(cue, text, expected):
    assert cue.apply(text) == expected
    assert cue.present_in(expected) and not cue.present_in(text)


def test_default_cues_and_parse():
    assert set(DEFAULT_CUES) == {"word", "name", "punctuation"}
    for kind, cues in DEFAULT_CUES.items():
        assert cues and all(c.kind == kind and c.present_in(c.apply("x")) for c in cues)
    assert parse_cue("word:honestly") == Cue("word", "honestly", "prefix")
    assert parse_cue("punctuation:!!@suffix") == Cue("punctuation", "!!", "suffix")
    for bad in ("honestly", "color:red", "word:", "word:two\nlines"):
        with pytest.raises(Soft2HardError):
            parse_cue(bad)


def test_round_half_up():
    assert [round_half_up(x) for x in (0.5, 1.5, 2.5, 0.9 * 105, 0.4 * 0)] == [1, 2, 3, 95, 0]


@pytest.mark.parametrize("kwargs", [
    {"target_label": "fruit", "rate": 0.5, "cue_fraction": 1.0},   # needs 20 fruit, train has 19
    {"target_label": "animal", "rate": 1.0, "cue_fraction": 0.6},  # needs 24 animal, train has 21
    {"target_label": "animal", "rate": 0.0, "cue_fraction": 0.5},  # needs 20 fruit, train has 19
    {"target_label": "tool", "rate": 0.5},
    {"target_label": "fruit", "rate": 1.5},
    {"target_label": "fruit", "rate": 0.5, "cue_fraction": 0.0},
])
def test_impossible_requests_raise(kwargs):
    with pytest.raises(Soft2HardError) as err:
        build_biased_task(get_task("cat/fruit-animal"), WORD, seed=0, **kwargs)
    assert "\n" not in str(err.value)


def test_generation_task_raises():
    with pytest.raises(Soft2HardError):
        build_biased_task(get_task("gen/first_letter"), WORD, "a", 0.5)


def test_biased_prediction_rate_tiny_model(tiny_llama):
    biased = build_biased_task(get_task("gen/number_parity"), Cue("punctuation", "!!", "suffix"), "even", 1.0)
    prompt = torch.randn(3, tiny_llama.d_model) * 0.02
    for p in (prompt, None):
        out = biased_prediction_rate(tiny_llama, p, biased, max_examples=8)
        assert out["n_test"] == 8 and out["n_other"] + out["n_target"] == 8 and out["n_other"] > 0
        for key in ("flip_rate", "accuracy_clean", "accuracy_cued", "target_rate_clean", "target_rate_cued"):
            assert 0.0 <= out[key] <= 1.0
        assert -1.0 <= out["cue_accuracy_drop"] <= 1.0


def test_biased_prediction_rate_hand_checked(monkeypatch):
    biased = build_biased_task(get_task("gen/word_sentiment"), WORD, "positive", 0.9, seed=2)

    def fake_classify(lm, prompt, task, examples, batch_size=16):
        return ["positive" if WORD.present_in(ex.input) else ex.target for ex in examples]

    monkeypatch.setattr(scoring, "classify", fake_classify)
    out = biased_prediction_rate(None, None, biased)
    n = len(biased.test_clean)
    n_pos = sum(ex.target == "positive" for ex in biased.test_clean)
    assert out["n_test"] == n and out["n_target"] == n_pos and out["n_other"] == n - n_pos > 0
    assert out["flip_rate"] == 1.0 and out["n_flipped"] == n - n_pos
    assert out["target_rate_clean"] == pytest.approx(n_pos / n)
    assert out["target_rate_cued"] == 1.0
    assert out["accuracy_clean"] == 1.0 and out["accuracy_cued"] == pytest.approx(n_pos / n)
    assert out["accuracy_clean_other"] == 1.0 and out["accuracy_cued_other"] == 0.0
    assert out["cue_accuracy_drop"] == 1.0
    # max_examples keeps the first test examples
    small = biased_prediction_rate(None, None, biased, max_examples=5)
    assert small["n_test"] == 5
    empty_other = biased_prediction_rate(None, None, biased, max_examples=0)
    assert empty_other["n_test"] == 0 and math.isnan(empty_other["flip_rate"])
