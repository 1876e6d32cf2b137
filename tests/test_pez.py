"""PEZ on a tiny model: the straight-through projection by hand, the fluency term, runs, seeds, exact resume."""

import json

import pytest
import torch
import torch.nn.functional as F

import soft2hard.optimize.pez as pez
from soft2hard import runs
from soft2hard.errors import Soft2HardError
from soft2hard.optimize import PezConfig, optimize_pez, project_straight_through
from soft2hard.tasks.base import Example, Task
from tests.conftest import interrupt_on_call

WORDS = ("apple banana cherry dog eagle frog grape house igloo jelly kite lemon mango nest olive piano queen "
         "river snake tiger umbrella violin whale xylophone yacht zebra").split()


@pytest.fixture
def cls_task():
    return Task("t/vowel", "test", "Does the word start with a vowel? yes or no.",
                tuple(Example(w, "yes" if w[0] in "aeiou" else "no") for w in WORDS), labels=("yes", "no"))


@pytest.fixture
def gen_task():
    return Task("t/first_letter", "test", "Output the first letter of the word.",
                tuple(Example(w, w[0]) for w in WORDS))


def _cfg(**kw):
    base = dict(n_tokens=4, steps=6, batch_size=4, eval_every=2, max_eval_examples=3, max_test_examples=3)
    base.update(kw)
    return PezConfig(**base)


def test_straight_through_forward_is_the_nearest_rows_and_gradient_passes_through():
    vocab = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0], [1.0, 1.0]])
    P = torch.tensor([[5.0, 0.5], [0.1, 0.3], [-1.0, 0.2]], requires_grad=True)
    p_st, ids = project_straight_through(P, vocab)
    assert ids.tolist() == [0, 1, 2]  # by cosine: row 1 is nearer [0, 2] than [1, 1]; row 0 nearest [1, 0]
    assert torch.equal(p_st, vocab[ids])  # forward value is exactly the projected rows
    c = torch.tensor([[1.0, -2.0], [3.0, 4.0], [0.5, 0.0]])
    (p_st * c).sum().backward()  # linear loss: d loss / d projected = c
    assert torch.equal(P.grad, c)


def test_nearest_ids_match_brute_force_cosine():
    gen = torch.Generator().manual_seed(0)
    vocab = torch.randn(50, 8, generator=gen) * torch.rand(50, 1, generator=gen) * 3  # varied norms
    P = torch.randn(6, 8, generator=gen)
    _, ids = project_straight_through(P, vocab)
    brute = [max(range(len(vocab)), key=lambda j, p=p: float(F.cosine_similarity(p, vocab[j], dim=0)))
             for p in P]
    assert ids.tolist() == brute


def test_fluency_only_loss_is_the_prompt_nll(tiny_llama, cls_task):
    lm = tiny_llama
    vocab = lm.vocab_embeddings()
    P = torch.randn(5, lm.d_model, generator=torch.Generator().manual_seed(1), requires_grad=True)
    loss, ids, parts = pez.pez_loss(lm, P, cls_task, list(cls_task.examples[:2]), 1.0, vocab)
    seq = torch.tensor([[lm.tokenizer.bos_token_id] + ids.tolist()])
    with torch.no_grad():
        out = lm.model(input_ids=seq)
    expected = F.cross_entropy(out.logits[0, :-1].float(), seq[0, 1:])
    assert torch.allclose(loss.detach(), expected, atol=1e-5) and set(parts) == {"fluency"}
    loss.backward()
    assert P.grad is not None and P.grad.abs().sum() > 0  # the fluency gradient reaches P


def test_task_loss_matches_tuning_formatting(tiny_llama, gen_task):
    lm, batch = tiny_llama, list(gen_task.examples[:3])
    P = torch.randn(3, lm.d_model, generator=torch.Generator().manual_seed(2))
    loss, ids, parts = pez.pez_loss(lm, P, gen_task, batch, 0.0, lm.vocab_embeddings())
    total, count = lm.target_logprobs(lm.embed(ids), [gen_task.format_input(ex.input) for ex in batch],
                                      [f" {ex.target}\n" for ex in batch])
    assert torch.allclose(loss.detach(), -total.sum() / count.sum(), atol=1e-5) and set(parts) == {"task"}


def test_run_writes_result_with_ids_and_reproduces(tiny_llama, cls_task, tmp_path):
    a = optimize_pez(tiny_llama, cls_task, _cfg(weight=0.5), tmp_path / "a", progress=False).to_dict()
    saved = json.loads((tmp_path / "a" / "result.json").read_text())
    assert saved["ids"] == a["ids"] and len(a["ids"]) == 4
    assert tiny_llama.tokenizer.decode(a["ids"], skip_special_tokens=False) == a["text"]
    assert [h["step"] for h in a["history"]] == [2, 4, 6] and len(a["losses"]) == 6
    assert {"validation_score", "test_score", "perplexity", "degenerate", "weight"} <= set(a)
    assert 0.0 <= a["test_score"] <= 1.0 and a["weight"] == 0.5
    b = optimize_pez(tiny_llama, cls_task, _cfg(weight=0.5), tmp_path / "b", progress=False).to_dict()
    assert b["ids"] == a["ids"] and b["history"] == a["history"]
    with pytest.raises(Soft2HardError, match="already holds"):
        optimize_pez(tiny_llama, cls_task, _cfg(weight=0.5), tmp_path / "a", progress=False)


def test_generation_task_and_vocab_init(tiny_llama, gen_task, tmp_path):
    r = optimize_pez(tiny_llama, gen_task, _cfg(steps=2, init="vocab"), tmp_path / "g", progress=False).to_dict()
    assert r["answer_type"] == "generation" and r["metric"] == "exact_match" and len(r["ids"]) == 4


def test_interrupted_run_resumes_bit_identically(tiny_llama, cls_task, tmp_path, monkeypatch):
    cfg = _cfg(init="vocab", weight=0.3)
    full = optimize_pez(tiny_llama, cls_task, cfg, tmp_path / "full", progress=False).to_dict()
    interrupt_on_call(monkeypatch, pez, "pez_loss", 4)  # after the step-2 checkpoint, mid-way between evals
    with pytest.raises(KeyboardInterrupt):
        optimize_pez(tiny_llama, cls_task, cfg, tmp_path / "crash", progress=False)
    monkeypatch.undo()
    assert not (tmp_path / "crash" / "result.json").exists()
    resumed = optimize_pez(tiny_llama, cls_task, cfg, tmp_path / "crash", resume=True, progress=False).to_dict()
    assert resumed == full
    last = lambda run: pez.load_file(str(runs.checkpoints(tmp_path / run, pez.STATE_NAME)[-1] / pez.TENSORS_NAME))  # noqa: E731
    a, b = last("full"), last("crash")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # P + Adafactor state


@pytest.mark.parametrize("kw, match", [
    ({"weight": 1.5}, "weight"), ({"weight": -0.1}, "weight"),
    ({"n_tokens": 0}, "n_tokens"), ({"steps": 2.5}, "steps"), ({"lr": 0.0}, "lr"),
    ({"lr": float("nan")}, "lr"), ({"init": "random"}, "init"), ({"grad_clip": -1}, "grad_clip"),
])
def test_bad_config_is_a_one_line_error(kw, match):
    with pytest.raises(Soft2HardError, match=match) as err:
        PezConfig(**kw)
    assert "\n" not in str(err.value)
