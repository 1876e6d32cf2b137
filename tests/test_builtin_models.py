"""Integration tests on the real built-in models (marked slow; CI runs them)."""

import json

import pytest
import torch

from soft2hard.cli import main
from soft2hard.prompts import SoftPrompt
from soft2hard.tasks import get_task
from soft2hard.tuning import TuningConfig, tune

pytestmark = pytest.mark.slow


def test_models_command_reports_cached(capsys, smollm2, cache_dir):
    assert main(["--cache-dir", str(cache_dir), "models", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["smollm2-135m"]["installed"] and rows["smollm2-135m"]["cached"]


def test_smollm2_learns_a_task_quickly(smollm2, tmp_path):
    task = get_task("gen/first_letter")
    cfg = TuningConfig(n_tokens=10, steps=40, batch_size=8, eval_every=20, max_eval_examples=16,
                       max_test_examples=40)
    m = tune(smollm2, task, cfg, tmp_path / "run", progress=False).metrics
    assert m["test_score"] >= m["baseline_score"] + 0.2, m  # a real soft prompt effect, not noise
    prompt = SoftPrompt.load(tmp_path / "run")
    assert prompt.model == "smollm2-135m" and prompt.tensor.shape == (10, 576)


def test_gemma3_tunes_in_its_scaled_space(gemma3, tmp_path):
    task = get_task("gen/word_sentiment")
    cfg = TuningConfig(n_tokens=4, steps=4, batch_size=4, eval_every=2, max_eval_examples=8, max_test_examples=8)
    result = tune(gemma3, task, cfg, tmp_path / "run", progress=False)
    norms = result.prompt.tensor.norm(dim=-1)
    vocab_norms = gemma3.vocab_embeddings()[:5000].norm(dim=-1)
    # vocabulary-initialised prompts start in the scaled space (x sqrt(640) ~ 25): same order of magnitude
    assert 0.3 * vocab_norms.mean() < norms.mean() < 3 * vocab_norms.mean()
    assert torch.isfinite(result.prompt.tensor).all()


def test_cli_tune_contract_on_smollm2(tmp_path, cache_dir):
    out = tmp_path / "run"
    code = main(["--cache-dir", str(cache_dir), "tune", "--model", "smollm2-135m", "--task", "gen/number_parity",
                 "--tokens", "5", "--steps", "4", "--seed", "1", "--eval-every", "2", "--out", str(out), "--quiet"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"baseline_score", "test_score"} <= set(metrics)
    assert (out / "adapter_config.json").exists() and (out / "adapter_model.safetensors").exists()
