"""Packs (tune_many): jobs stay independent, match tune alone, refill slots, isolate failures, resume exactly.

Tolerance of the equivalence with ``tune``: a row's numbers depend on its pack-mates only through padding (a
longer batch) and matmul shapes, i.e. float summation order (~1e-7 relative in fp32); AdamW at lr 0.1 divides by
sqrt(v), which can amplify such a difference in a near-zero gradient, so losses are compared to 1e-3 absolute
over 6 steps, validation scores to 1e-9 (on 4 examples a flip would show as 0.25); gradients to 1e-6
absolute (their scale is ~1e-2: summation order moves the smallest elements by ~2e-7).
"""

import json

import pytest
import torch

import soft2hard.packs as packs
from soft2hard.errors import Soft2HardError
from soft2hard.packs import TuningJob, tune_many
from soft2hard.prompts import SoftPrompt
from soft2hard.tasks.base import Example, Task
from soft2hard.tuning import TuningConfig, tune

WORDS = ("apple banana cherry dog eagle frog grape house igloo jelly kite lemon mango nest olive piano queen "
         "river snake tiger umbrella violin whale xylophone yacht zebra").split()


def _tasks():
    first = Task("t/first_letter", "test", "Output the first letter.", tuple(Example(w, w[0]) for w in WORDS))
    upper = Task("t/upper", "test", "Uppercase the word.", tuple(Example(w, w.upper()) for w in WORDS))
    vowel = Task("t/vowel", "test", "Starts with a vowel?",
                 tuple(Example(w, "yes" if w[0] in "aeiou" else "no") for w in WORDS), labels=("yes", "no"))
    return [first, upper, vowel]


def _cfg(**kw):
    base = dict(n_tokens=4, steps=6, batch_size=4, lr=0.1, eval_every=2, max_eval_examples=4, max_test_examples=4)
    return TuningConfig(**{**base, **kw})


def _jobs(tmp_path, seeds=(0, 1, 2), **kw):
    return [TuningJob(t, _cfg(seed=s, **kw), tmp_path / f"{t.name.replace('/', '_')}-{s}")
            for t, s in zip(_tasks(), seeds)]


def _metrics(out):
    return json.loads((out / "metrics.json").read_text())


@pytest.mark.parametrize("model", ["tiny_llama", "tiny_gemma"])  # Gemma: sliding window, scaled embeddings
def test_pack_matches_tune_alone(model, tmp_path, request):
    tiny_llama = request.getfixturevalue(model)
    jobs = _jobs(tmp_path / "pack")
    outcomes = tune_many(tiny_llama, jobs, pack=3, progress=False)
    assert all(o.error is None and o.result is not None for o in outcomes)
    for job in jobs:
        alone = tune(tiny_llama, job.task, job.cfg, tmp_path / "alone" / job.out.name, progress=False).metrics
        packed = _metrics(job.out)
        assert packed["losses"] == pytest.approx(alone["losses"], abs=1e-3)
        assert [v["score"] for v in packed["validation"]] == pytest.approx(
            [v["score"] for v in alone["validation"]], abs=1e-9)
        for key in ("best_step", "baseline_score", "baseline_validation_score", "n_train", "n_test", "metric"):
            assert packed[key] == alone[key], key
        for f in ("adapter_config.json", "adapter_model.safetensors", "config.json"):
            assert (job.out / f).is_file()
        assert SoftPrompt.load(job.out).tensor.shape == (4, tiny_llama.d_model)


def _grads(lm, prompts, contexts, targets, rows):
    p = prompts.clone().requires_grad_(True)
    total, count = lm.target_logprobs(p, contexts, targets, torch.tensor(rows))
    row = torch.tensor(rows)
    losses = -torch.zeros(len(p)).index_add(0, row, total) / torch.zeros(len(p)).index_add(0, row, count)
    losses.sum().backward()
    return p.grad, losses.detach()


def test_one_jobs_prompt_or_data_never_reaches_another(tiny_llama):
    torch.manual_seed(0)
    prompts = torch.randn(2, 4, tiny_llama.d_model) * 0.1
    ctx, tgt, rows = ["apple ->", "dog ->", "kite ->", "zebra ->"], [" a", " d", " K", " Z"], [0, 0, 1, 1]
    grad, loss = _grads(tiny_llama, prompts, ctx, tgt, rows)
    other = prompts.clone()
    other[1] += 1.0  # perturb job 1's prompt: job 0's gradient and loss are bit-identical
    grad2, loss2 = _grads(tiny_llama, other, ctx, tgt, rows)
    assert torch.equal(grad[0], grad2[0]) and torch.equal(loss[0], loss2[0])
    assert not torch.equal(grad[1], grad2[1])
    # perturb job 1's data (other lengths: the padding changes, so equal to float rounding only)
    grad3, loss3 = _grads(tiny_llama, prompts, ctx[:2] + ["a much longer input here ->", "x"],
                          tgt[:2] + [" longer target text", " y"], rows)
    assert torch.allclose(grad[0], grad3[0], rtol=1e-4, atol=1e-6) and torch.allclose(loss[0], loss3[0])
    # and job 0 alone (tune's own path) gives the same gradient
    alone = prompts[0].clone().requires_grad_(True)
    total, count = tiny_llama.target_logprobs(alone, ctx[:2], tgt[:2])
    (-total.sum() / count.sum()).backward()
    assert torch.allclose(grad[0], alone.grad, rtol=1e-4, atol=1e-6)


def test_slots_refill_and_a_failing_job_does_not_stop_the_others(tiny_llama, tmp_path):
    jobs = _jobs(tmp_path)

    def unreadable():
        raise Soft2HardError("data.jsonl line 3: not JSON")

    jobs.insert(1, TuningJob(unreadable, _cfg(), tmp_path / "bad"))
    seen = []
    outcomes = tune_many(tiny_llama, jobs, pack=2, progress=False, on_outcome=lambda o: seen.append(o.job.name))
    assert [o.error is None for o in outcomes] == [True, False, True, True]
    assert "not JSON" in outcomes[1].error and len(seen) == 4
    assert all((j.out / "metrics.json").is_file() for j in jobs if j.out.name != "bad")
    # a rerun skips the finished jobs (and retries the failed one)
    again = tune_many(tiny_llama, jobs, pack=2, progress=False)
    assert [o.result is None for o in again] == [True, True, True, True] and again[1].error


def test_early_stopping_is_per_job(tiny_llama, tmp_path):
    # lr 0 never improves on the first validation: with patience 1 the job stops at its second one
    jobs = [TuningJob(_tasks()[0], _cfg(lr=1e-12, steps=10, patience=1), tmp_path / "stops"),
            TuningJob(_tasks()[1], _cfg(steps=10), tmp_path / "runs")]
    tune_many(tiny_llama, jobs, pack=2, progress=False)
    stopped, full = _metrics(tmp_path / "stops"), _metrics(tmp_path / "runs")
    assert full["steps"] == 10 and "stopped_at_step" not in full and len(full["losses"]) == 10
    assert stopped["stopped_at_step"] == 4 and len(stopped["losses"]) == 4
    alone = tune(tiny_llama, jobs[0].task, jobs[0].cfg, tmp_path / "alone", progress=False).metrics
    assert alone.get("stopped_at_step") == stopped.get("stopped_at_step")


def test_resume_after_interruption_is_bit_identical(tiny_llama, tmp_path, monkeypatch):
    ref = _jobs(tmp_path / "ref") + [TuningJob(_tasks()[0], _cfg(seed=7), tmp_path / "ref" / "extra")]
    tune_many(tiny_llama, ref, pack=2, journal=tmp_path / "ref.json", progress=False)
    jobs = _jobs(tmp_path / "run") + [TuningJob(_tasks()[0], _cfg(seed=7), tmp_path / "run" / "extra")]
    real, calls = packs._step, {"n": 0}

    def interrupted(*args):
        calls["n"] += 1
        if calls["n"] == 9:  # mid-pack: the first two jobs are done, the next two are at step 2
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(packs, "_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        tune_many(tiny_llama, jobs, pack=2, journal=tmp_path / "run.json", progress=False)
    monkeypatch.setattr(packs, "_step", real)
    assert not (jobs[3].out / "metrics.json").exists()
    tune_many(tiny_llama, jobs, pack=2, journal=tmp_path / "run.json", progress=False)
    for a, b in zip(ref, jobs):
        assert _metrics(a.out)["losses"] == _metrics(b.out)["losses"]
        assert (a.out / "adapter_model.safetensors").read_bytes() == (b.out / "adapter_model.safetensors").read_bytes()


def test_bad_pack_arguments(tiny_llama, tmp_path):
    with pytest.raises(Soft2HardError, match="pack size"):
        tune_many(tiny_llama, _jobs(tmp_path), pack=0, progress=False)
    twice = _jobs(tmp_path)[:1] * 2
    with pytest.raises(Soft2HardError, match="share a run folder"):
        tune_many(tiny_llama, twice, progress=False)
    distill = [TuningJob(_tasks()[0], _cfg(objective="distill", teacher_prompt="Say it."), tmp_path / "d")]
    assert "alone" in tune_many(tiny_llama, distill, progress=False)[0].error


def test_tune_many_cli_runs_every_task_and_seed(tiny_llama_dir, tmp_path, capsys):
    from soft2hard.cli import main

    out = tmp_path / "many"
    args = ["tune-many", "--model", str(tiny_llama_dir), "--tasks", "gen/first_letter,gen/starts_with_vowel",
            "--seeds", "0,1", "--pack", "3", "--tokens", "3", "--steps", "4", "--eval-every", "2",
            "--batch-size", "4", "--out", str(out), "--quiet", "--json"]
    assert main(args) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["run"] for r in rows] == ["gen/first_letter@seed0", "gen/first_letter@seed1",
                                        "gen/starts_with_vowel@seed0", "gen/starts_with_vowel@seed1"]
    assert all(r["error"] is None and 0 <= r["test_score"] <= 1 for r in rows)
    assert (out / "gen__starts_with_vowel" / "seed1" / "adapter_model.safetensors").is_file()
    assert main(args) == 2  # an existing folder needs --resume or --overwrite
    assert "--resume" in capsys.readouterr().err
    assert main([*args, "--resume"]) == 0
    assert main(["tune-many", "--model", str(tiny_llama_dir), "--tasks", "gen/no_such_task", "--out",
                 str(out)]) == 2
    assert "no_such_task" in capsys.readouterr().err


def test_a_worker_that_cannot_see_the_build_folder_says_so(tmp_path):
    from soft2hard.dod.build import _Runner

    with pytest.raises(Soft2HardError, match="shared filesystem"):
        _Runner("smollm2-135m", str(tmp_path), "none", None, root=str(tmp_path / "elsewhere"))


def test_interrupted_while_finishing_resumes_and_finishes(tiny_llama, tmp_path, monkeypatch):
    from tests.conftest import interrupt_on_call

    ref = _jobs(tmp_path / "ref")
    tune_many(tiny_llama, ref, pack=3, journal=tmp_path / "ref.json", progress=False)
    jobs = _jobs(tmp_path / "run")
    interrupt_on_call(monkeypatch, packs, "finish_run", call=2)  # the pack is at its last step, one job written
    with pytest.raises(KeyboardInterrupt):
        tune_many(tiny_llama, jobs, pack=3, journal=tmp_path / "run.json", progress=False)
    monkeypatch.undo()
    outcomes = tune_many(tiny_llama, jobs, pack=3, journal=tmp_path / "run.json", progress=False)
    assert all(o.error is None for o in outcomes)
    for a, b in zip(ref, jobs):
        assert (a.out / "adapter_model.safetensors").read_bytes() == (b.out / "adapter_model.safetensors").read_bytes()
