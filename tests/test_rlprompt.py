"""RLPrompt: reward arithmetic, the soft-Q loss, the zero-initialised policy, and run/resume on a tiny model."""

from __future__ import annotations

import json
import math

import pytest
import torch

from soft2hard.errors import Soft2HardError
from soft2hard.faithfulness import perplexity
from soft2hard.optimize import rlprompt
from soft2hard.optimize.rlprompt import (
    RLPromptConfig,
    classification_reward,
    make_mlp,
    optimize_rlprompt,
    path_loss,
    policy_logits,
    prompt_rewards,
    sample_prompts,
    soft_q_loss,
    zscore,
)
from soft2hard.tasks.base import Example, Task
from tests.conftest import interrupt_on_call

WORDS = ["apple", "dog", "pear", "cat", "plum", "cow", "fig", "owl", "kiwi", "fox", "lime", "bee",
         "peach", "hen", "grape", "pig", "melon", "rat", "date", "elk"]


def fruit_task() -> Task:
    examples = tuple(Example(w, "fruit" if i % 2 == 0 else "animal") for i, w in enumerate(WORDS))
    return Task(name="test/fruit-animal", source="generated", description="Is it a fruit or an animal?",
                examples=examples, labels=("fruit", "animal"))


def tiny_cfg(**kw) -> RLPromptConfig:
    base = {"n_tokens": 3, "steps": 4, "samples_per_step": 2, "batch_size": 2, "mlp_hidden": 16,
            "eval_every": 2, "max_eval_examples": 2, "max_test_examples": 4, "lr": 1e-3}
    return RLPromptConfig(**{**base, **kw})


def test_classification_reward_hand_computed():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.3, 0.6, 0.1]])
    r = classification_reward(probs, torch.tensor([0, 0]), correct_coef=2.0, incorrect_coef=1.8)
    assert r.item() == pytest.approx((0.5 * 2.0 + -0.3 * 1.8) / 2)  # 0.23
    one = classification_reward(probs[1:], torch.tensor([1]), 2.0, 1.8)
    assert one.item() == pytest.approx((0.6 - 0.3) * 2.0)


def test_zscore():
    z = zscore(torch.tensor([1.0, 2.0, 4.0, 7.0]))
    assert z.mean().item() == pytest.approx(0.0, abs=1e-6)
    assert z.std(unbiased=False).item() == pytest.approx(1.0, abs=1e-5)
    same = zscore(torch.tensor([3.0, 3.0, 3.0]))
    assert torch.equal(same, torch.zeros(3))


def test_perplexity_penalty_is_lambda_log_ppl(tiny_llama):
    task = fruit_task()
    ids = tiny_llama.encode(" the cat sat", special=False)
    assert tiny_llama.encode(tiny_llama.decode(ids), special=False) == ids  # round-trips, so text ppl applies
    batch = list(task.examples[:3])
    plain, log_ppl = prompt_rewards(tiny_llama, task, torch.tensor([ids]), batch, tiny_cfg())
    penalised, _ = prompt_rewards(tiny_llama, task, torch.tensor([ids]), batch, tiny_cfg(weight=0.5))
    expected = math.log(perplexity(tiny_llama, tiny_llama.decode(ids)))
    assert log_ppl.item() == pytest.approx(expected, rel=1e-4)
    assert (plain - penalised).item() == pytest.approx(0.5 * log_ppl.item(), rel=1e-5)


def test_initial_policy_is_the_lm(tiny_llama):
    lm = tiny_llama
    mlp = make_mlp(lm.d_model, 16, seed=0)
    ids, hidden = sample_prompts(lm, mlp, 2, 3, torch.Generator().manual_seed(0))
    assert ids.shape == (2, 3)
    policy = policy_logits(lm, mlp, hidden)
    assert torch.equal(policy, lm.logits_from_hidden(hidden))  # zero output layer: exactly the LM head
    seq = torch.cat([torch.full((2, 1), lm.tokenizer.bos_token_id), ids[:, :-1]], 1)
    with torch.no_grad():
        ref = lm.model(input_ids=seq).logits.float()
    torch.testing.assert_close(policy, ref, atol=1e-4, rtol=1e-4)


def test_soft_q_loss_hand_built():
    q = torch.tensor([[[1.0, 2.0, 0.5]]])  # S=1, k=1, V=3: only the last step
    loss = soft_q_loss(q, torch.tensor([[1]]), torch.zeros(1, 1, 3), torch.tensor([0.5]))
    assert loss.item() == pytest.approx((2.0 - 0.5) ** 2)
    q2 = torch.tensor([[[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]])  # k=2: step 0 -> logsumexp target-Q(s_1)
    tq = torch.tensor([[[9.0, 9.0, 9.0], [0.0, math.log(3.0), float("-inf")]]])
    loss2 = soft_q_loss(q2, torch.tensor([[0, 2]]), tq, torch.tensor([1.0]))
    assert loss2.item() == pytest.approx(((1.0 - math.log(4.0)) ** 2 + (3.0 - 1.0) ** 2) / 2, rel=1e-6)


def test_path_loss_hand_built():
    # S=1, k=2, V=3. Online log pi of the taken actions: A_0 = log(1/4) (action 0 of [0, log 3, -inf]) and
    # A_1 = log(1/2) (action 1 of [0, 0, -inf]). Target values V'(s_0) = log 2, V'(s_1) = log 4, reward 1.
    q = torch.tensor([[[0.0, math.log(3.0), float("-inf")], [0.0, 0.0, float("-inf")]]])
    tq = torch.tensor([[[0.0, 0.0, float("-inf")], [math.log(2.0), math.log(2.0), float("-inf")]]])
    a0, a1, v0, v1, r = math.log(0.25), math.log(0.5), math.log(2.0), math.log(4.0), 1.0
    single = (a0 - (v1 - v0)) ** 2 + (a1 - (r - v1)) ** 2
    multi = (a0 + a1 - (r - v0)) ** 2 + (a1 - (r - v1)) ** 2
    loss = path_loss(q, torch.tensor([[0, 1]]), tq, torch.tensor([r]))
    assert loss.item() == pytest.approx((single + multi) / 2, rel=1e-6)
    # adding a constant to every online logit changes nothing: the loss sees log-probabilities only
    assert path_loss(q + 7.0, torch.tensor([[0, 1]]), tq, torch.tensor([r])).item() == pytest.approx(loss.item())


def test_path_loss_run_differs_and_is_deterministic(tiny_llama, tmp_path):
    task = fruit_task()
    a = optimize_rlprompt(tiny_llama, task, tiny_cfg(sql_loss="path", reward_scale=5.0), tmp_path / "a",
                          progress=False).to_dict()
    b = optimize_rlprompt(tiny_llama, task, tiny_cfg(sql_loss="path", reward_scale=5.0), tmp_path / "b",
                          progress=False).to_dict()
    single = optimize_rlprompt(tiny_llama, task, tiny_cfg(), tmp_path / "c", progress=False).to_dict()
    assert a["ids"] == b["ids"] and a["training"] == b["training"]
    assert [h["loss"] for h in a["training"]] != [h["loss"] for h in single["training"]]
    assert a["config"]["sql_loss"] == "path" and a["config"]["reward_scale"] == 5.0


def test_run_determinism_and_resume(tiny_llama, tmp_path, monkeypatch):
    task = fruit_task()
    cfg = tiny_cfg()
    a = optimize_rlprompt(tiny_llama, task, cfg, tmp_path / "a", progress=False).to_dict()
    saved = json.loads((tmp_path / "a" / "result.json").read_text())
    assert len(saved["ids"]) == 3 and isinstance(saved["text"], str)
    assert saved["ids"] == a["ids"] and 0.0 <= saved["test_score"] <= 1.0 and len(saved["training"]) == 4
    with pytest.raises(Soft2HardError, match="already holds"):
        optimize_rlprompt(tiny_llama, task, cfg, tmp_path / "a", progress=False)
    b = optimize_rlprompt(tiny_llama, task, cfg, tmp_path / "b", progress=False).to_dict()
    assert b["ids"] == a["ids"]

    interrupt_on_call(monkeypatch, rlprompt, "train_step", 4)  # step 3: after the checkpoint at step 2
    with pytest.raises(KeyboardInterrupt):
        optimize_rlprompt(tiny_llama, task, cfg, tmp_path / "c", progress=False)
    monkeypatch.undo()
    c = optimize_rlprompt(tiny_llama, task, cfg, tmp_path / "c", resume=True, progress=False).to_dict()
    strip = lambda r: {k: v for k, v in r.items() if k != "train_seconds"}  # noqa: E731
    assert strip(c) == strip(a)


def test_rejects_generation_task_and_bad_config(tiny_llama, tmp_path):
    gen = Task(name="test/copy", source="generated", description="Copy.",
               examples=tuple(Example(w, w) for w in WORDS[:5]))
    with pytest.raises(Soft2HardError, match="classification"):
        optimize_rlprompt(tiny_llama, gen, tiny_cfg(), tmp_path / "g", progress=False)
    with pytest.raises(Soft2HardError, match="samples_per_step"):
        RLPromptConfig(samples_per_step=1)
    with pytest.raises(Soft2HardError, match="weight"):
        RLPromptConfig(weight=-1.0)
    with pytest.raises(Soft2HardError, match="sql_loss must be one of single_step, path"):
        RLPromptConfig(sql_loss="v3")
    with pytest.raises(Soft2HardError, match="reward_scale"):
        RLPromptConfig(reward_scale=0.0)
