"""Faithfulness and scrutability metrics on hand-checkable cases."""

import math

import pytest
import torch

import soft2hard.faithfulness as fa
from soft2hard.tasks.base import Example, Task

TASK = Task("t/fa", "test", "Fruit or animal?", tuple(Example(w, lab) for w, lab in
            [("apple", "fruit"), ("dog", "animal"), ("pear", "fruit"), ("cat", "animal")]), labels=("fruit", "animal"))


def test_label_distributions_are_distributions(tiny_llama):
    p = fa.label_distributions(tiny_llama, TASK, TASK.examples, prompt=torch.randn(3, tiny_llama.d_model))
    q = fa.label_distributions(tiny_llama, TASK, TASK.examples, text="Say fruit or animal.")
    for d in (p, q):
        assert d.shape == (4, 2) and torch.allclose(d.sum(-1), torch.ones(4))
    assert not torch.allclose(p, q)


@pytest.mark.parametrize("model", ["tiny_llama", "tiny_gemma"])  # Gemma: sliding-window attention
def test_shared_context_label_scores_equal_one_pass_per_label(model, request):
    """Labels of 1, 2 and 3 tokens continued from the context's cache score as full passes do."""
    lm = request.getfixturevalue(model)
    labels = ("fruit", "an animal", "a small green plant")
    assert sorted({len(lm.encode(" " + lab, special=False)) for lab in labels}) != [1]
    task = Task("t/three", "test", "Which kind?", tuple(Example(w, labels[i % 3]) for i, w in
                enumerate(["apple", "dog", "fern", "a long input with several words", "cat"])), labels=labels)
    targets = [task.format_target(lab) for lab in labels]
    contexts = [task.format_input(ex.input) for ex in task.examples]
    for prompt in (None, torch.randn(3, lm.d_model)):
        shared = fa.label_logprobs(lm, prompt, contexts, targets)
        full = torch.stack([lm.target_logprobs(prompt, contexts, [t] * len(contexts))[0].float().cpu()
                            for t in targets], dim=1)
        assert shared.shape == (5, 3) and torch.allclose(shared, full, atol=1e-4), (shared - full).abs().max()
        for text in (None, "Say which kind."):
            a = fa.label_distributions(lm, task, task.examples, prompt=prompt, text=text, batch_size=2,
                                       shared_context=True)
            b = fa.label_distributions(lm, task, task.examples, prompt=prompt, text=text, batch_size=4)
            assert torch.allclose(a, b, atol=1e-5)


def test_faithfulness_matches_a_hand_computation(tiny_llama, monkeypatch):
    soft = torch.tensor([[0.9, 0.1], [0.2, 0.8]])
    text_dist = torch.tensor([[0.6, 0.4], [0.7, 0.3]])
    monkeypatch.setattr(fa, "label_distributions",
                        lambda lm, task, ex, prompt=None, text=None, batch_size=16: soft if prompt is not None else text_dist)
    out = fa.faithfulness(tiny_llama, torch.zeros(2, 2), "x", TASK, TASK.examples[:2])
    kl = [0.9 * math.log(0.9 / 0.6) + 0.1 * math.log(0.1 / 0.4), 0.2 * math.log(0.2 / 0.7) + 0.8 * math.log(0.8 / 0.3)]
    assert out["agreement"] == 0.5
    assert out["mean_kl"] == pytest.approx(sum(kl) / 2, rel=1e-5)


def test_perplexity_equals_the_models_own_loss(tiny_llama):
    text = "the cat sat on the mat"
    ids = [tiny_llama.tokenizer.bos_token_id] + tiny_llama.encode(text, special=False)
    t = torch.tensor([ids])
    with torch.no_grad():
        loss = tiny_llama.model(input_ids=t, labels=t).loss
    assert fa.perplexity(tiny_llama, text) == pytest.approx(math.exp(float(loss)), rel=1e-4)
    assert fa.perplexity(tiny_llama, "") == float("inf")


def test_word_validity_and_degenerate_flags(tiny_llama):
    assert fa.word_validity("Classify the review as positive or negative.") == 1.0
    assert fa.word_validity("xqzrtpl ### 42 cat") == 0.25
    assert fa.word_validity("") == 0.0
    assert fa.word_validity("cat dog", vocabulary={"cat"}) == 0.5
    ids = tiny_llama.encode(" the the the the", special=False)
    assert "repeated" in fa.degenerate_flags(tiny_llama, ids, "the the the the")
    eos = tiny_llama.tokenizer.eos_token_id
    assert "special" in fa.degenerate_flags(tiny_llama, [eos, 5, 6], "x")
    assert fa.degenerate_flags(tiny_llama, tiny_llama.encode("Say if it is a fruit", special=False),
                               "Say if it is a fruit") == []
    s = fa.scrutability(tiny_llama, "Say if it is a fruit")
    assert s["perplexity"] > 1 and s["word_validity"] == 1.0 and s["degenerate"] == []
