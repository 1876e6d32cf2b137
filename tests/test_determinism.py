"""Reproducibility across processes: the same seed gives a bit-identical soft prompt and identical texts.

Each step runs twice in fresh processes (the CLI), so nothing is shared through a warm cache or global state:
tuning (prompt tensor), projection and InSPEcT descriptions, translation, and an evaluation's results."""

from __future__ import annotations

import json
import subprocess
import sys

import torch

from soft2hard.prompts import SoftPrompt


def _cli(*args) -> str:
    proc = subprocess.run([sys.executable, "-m", "soft2hard.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_same_seed_gives_identical_prompts_and_texts(tmp_path, tiny_llama_dir, tiny_gemma_dir, tiny_translator,
                                                     tiny_profile):
    tune = ["tune", "--model", tiny_llama_dir, "--task", "gen/plural", "--tokens", 4, "--steps", 6, "--eval-every", 3,
            "--batch-size", 4, "--quiet"]
    runs = []
    for name in ("a", "b"):
        _cli(*tune, "--seed", 3, "--out", tmp_path / name)
        runs.append(tmp_path / name)
    _cli(*tune, "--seed", 4, "--out", tmp_path / "other")
    a, b, other = (SoftPrompt.load(p).tensor for p in (*runs, tmp_path / "other"))
    assert torch.equal(a, b) and not torch.equal(a, other)

    for args in (["describe", "--method", "projection"],
                 ["describe", "--method", "inspect", "--profile", tiny_profile, "--max-new-tokens", 8],
                 ["translate", "--translator", tiny_translator]):
        outs = [json.loads(_cli(*args, run, "--model", tiny_llama_dir, "--json")) for run in runs]
        for out in outs:
            out.pop("prompt", None)  # the prompt's path, which differs
            out.pop("seconds", None)  # verified translation (translate's default) reports its time
        assert outs[0] == outs[1], args

    results = []
    for name, run in zip("ab", runs):
        out = tmp_path / f"eval_{name}"
        _cli("evaluate", "--prompt", f"gen/plural={run}", "--tasks", "gen/plural", "--model", tiny_llama_dir,
             "--target", tiny_gemma_dir, "--conditions", "soft_prompt,zero_shot,few_shot,projection",
             "--max-examples", 3, "--seed", 3, "--out", out, "--quiet")
        results.append((json.loads((out / "results.json").read_text()),
                        json.loads((out / "predictions.json").read_text())))
    assert results[0] == results[1]
