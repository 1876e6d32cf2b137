"""Prompt tuning on a tiny model: learning happens, seeds reproduce, resume is exact, writes are atomic."""

import json

import pytest
import torch

import soft2hard.tuning as tuning
from soft2hard.errors import Soft2HardError
from soft2hard.prompts import SoftPrompt
from soft2hard.tasks.base import Example, Task
from soft2hard.tuning import TuningConfig, tune

WORDS = ("apple banana cherry dog eagle frog grape house igloo jelly kite lemon mango nest olive piano queen "
         "river snake tiger umbrella violin whale xylophone yacht zebra").split()


@pytest.fixture
def task():
    return Task("t/first_letter", "test", "Output the first letter of the word.",
                tuple(Example(w, w[0]) for w in WORDS))


@pytest.fixture
def cls_task():
    return Task("t/vowel", "test", "Does the word start with a vowel? yes or no.",
                tuple(Example(w, "yes" if w[0] in "aeiou" else "no") for w in WORDS), labels=("yes", "no"))


def _cfg(**kw):
    base = dict(n_tokens=4, steps=6, batch_size=4, lr=0.1, eval_every=2, max_eval_examples=4, max_test_examples=4)
    base.update(kw)
    return TuningConfig(**base)


def test_tuning_lowers_loss_and_writes_peft_dir(tiny_llama, task, tmp_path):
    result = tune(tiny_llama, task, _cfg(steps=30, eval_every=10, lr=0.3), tmp_path / "run", progress=False)
    losses = result.metrics["losses"]
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5
    for f in ["adapter_config.json", "adapter_model.safetensors", "metrics.json", "config.json"]:
        assert (tmp_path / "run" / f).exists()
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert {"baseline_score", "test_score", "validation", "losses"} <= set(metrics)
    assert len(list((tmp_path / "run" / "checkpoints").iterdir())) == 3
    loaded = SoftPrompt.load(tmp_path / "run")
    assert loaded.tensor.shape == (4, tiny_llama.d_model) and loaded.metadata["task"] == task.name


def test_model_stays_frozen(tiny_llama, task, tmp_path):
    before = {k: v.clone() for k, v in tiny_llama.model.state_dict().items()}
    tune(tiny_llama, task, _cfg(), tmp_path / "run", progress=False)
    after = tiny_llama.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_classification_task_is_scored_by_accuracy(tiny_llama, cls_task, tmp_path):
    m = tune(tiny_llama, cls_task, _cfg(), tmp_path / "run", progress=False).metrics
    assert m["metric"] == "accuracy" and 0.0 <= m["test_score"] <= 1.0


@pytest.mark.parametrize("init", ["vocab", "random", "text"])
def test_same_seed_same_prompt(tiny_llama, task, tmp_path, init):
    kw = {"init": init, "init_text": "first letter" if init == "text" else None}
    a = tune(tiny_llama, task, _cfg(seed=5, **kw), tmp_path / "a", progress=False).prompt.tensor
    b = tune(tiny_llama, task, _cfg(seed=5, **kw), tmp_path / "b", progress=False).prompt.tensor
    c = tune(tiny_llama, task, _cfg(seed=6, **kw), tmp_path / "c", progress=False).prompt.tensor
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_resume_after_crash_is_identical(tiny_llama, task, tmp_path, monkeypatch):
    full = tune(tiny_llama, task, _cfg(), tmp_path / "full", progress=False)

    real = tuning.training_loss
    calls = {"n": 0}

    def crashing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:  # after the step-2 checkpoint, during step 4
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(tuning, "training_loss", crashing)
    with pytest.raises(KeyboardInterrupt):
        tune(tiny_llama, task, _cfg(), tmp_path / "crash", progress=False)
    assert not (tmp_path / "crash" / "metrics.json").exists()
    monkeypatch.setattr(tuning, "training_loss", real)
    counted = {"n": 0}

    def counting(*args, **kwargs):
        counted["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(tuning, "training_loss", counting)
    resumed = tune(tiny_llama, task, _cfg(), tmp_path / "crash", resume=True, progress=False)
    assert counted["n"] == 4, "resume must not redo the finished steps 1-2"
    assert torch.equal(full.prompt.tensor, resumed.prompt.tensor)
    assert full.metrics["losses"] == resumed.metrics["losses"]


def test_existing_run_needs_resume_or_overwrite(tiny_llama, task, tmp_path):
    tune(tiny_llama, task, _cfg(), tmp_path / "run", progress=False)
    with pytest.raises(Soft2HardError, match="--resume"):
        tune(tiny_llama, task, _cfg(), tmp_path / "run", progress=False)
    with pytest.raises(Soft2HardError, match="different settings"):
        tune(tiny_llama, task, _cfg(lr=0.5), tmp_path / "run", resume=True, progress=False)
    tune(tiny_llama, task, _cfg(lr=0.5), tmp_path / "run", overwrite=True, progress=False)


@pytest.mark.parametrize("bad, match", [
    (dict(n_tokens=0), "n_tokens"), (dict(steps=-1), "steps"), (dict(lr=float("nan")), "lr"),
    (dict(init="zeros"), "init"), (dict(init="text"), "init_text"),
])
def test_bad_config(bad, match):
    with pytest.raises(Soft2HardError, match=match):
        _cfg(**bad)
