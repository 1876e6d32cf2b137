"""``soft2hard demo`` end to end, on the tiny random models: tune, describe, deploy, report.

The shipped translator and InSPEcT profile only fit SmolLM2, so the tiny run uses the tiny ones from conftest
(``run_demo(translator=, profile=)``). The real demo on the built-in models is the ``slow`` test."""

import json
import math

import pytest

from soft2hard.cli import main
from soft2hard.demo import DEMO_CONDITIONS, run_demo

TEXTS = ("reference", "projection", "inspect", "translator")


def _check_outputs(out, rows, printed, source: str, target: str, steps: int, n: int) -> None:
    metrics = json.loads((out / "prompt" / "metrics.json").read_text())
    assert metrics["task"] == "gen/plural" and metrics["steps"] == steps and metrics["n_tokens"] == 20
    assert 0.0 <= metrics["test_score"] <= 1.0 and 0.0 <= metrics["baseline_score"] <= 1.0
    assert (out / "prompt" / "adapter_model.safetensors").is_file()

    results = json.loads((out / "eval" / "results.json").read_text())
    assert results == json.loads(json.dumps(rows))  # what run_demo returned is what it wrote
    assert sorted(r["condition"] for r in results) == sorted(DEMO_CONDITIONS)  # each condition once
    for r in results:
        assert r["task"] == "gen/plural" and r["n"] == n, r
        assert r["model"] == (source if r["condition"] == "soft_prompt" else f"local:{target}"), r
        assert r["metric"] == "rouge_l" and 0.0 <= r["score"] <= 1.0 and not math.isnan(r["score"]), r
    by_condition = {r["condition"]: r for r in results}
    texts = json.loads((out / "eval" / "texts.json").read_text())["gen/plural"]["texts"]
    for condition in TEXTS:  # each interpretation was deployed as the target's instruction
        assert isinstance(texts[condition]["text"], str)
        assert by_condition[condition]["instruction"] == texts[condition]["text"]

    report = (out / "eval" / "report.html").read_text()
    assert report.startswith("<!DOCTYPE html>")
    assert all(c in report for c in DEMO_CONDITIONS)

    steps_printed = [line for line in printed.splitlines() if line.startswith("[")]
    assert [s[:5] for s in steps_printed] == ["[1/4]", "[2/4]", "[3/4]", "[4/4]"]
    table = printed.split("[4/4] results")[1]
    header = next(line for line in table.splitlines() if line.startswith("| task |"))
    assert all(f" {c} " in header for c in DEMO_CONDITIONS), header
    assert "| gen/plural | rouge_l |" in table
    assert f"HTML report: {out / 'eval' / 'report.html'}" in printed


def test_demo_on_tiny_models(tiny_llama_dir, tiny_gemma_dir, tiny_translator, tiny_profile, tmp_path, capsys):
    out = tmp_path / "demo"
    rows = run_demo(model=str(tiny_llama_dir), out=out, steps=4, device="cpu", cache_dir=tmp_path / "cache",
                    target=str(tiny_gemma_dir), max_examples=4, inspect_grid="0-1", progress=False,
                    translator=tiny_translator, profile=tiny_profile)
    printed = capsys.readouterr().out
    assert f"interpreters not the shipped ones: translator {tiny_translator}" in printed
    assert "warning: the translator interpreter saw gen/plural" in printed  # the tiny DoD trains on it
    assert "not among the translator's training tasks" not in printed
    _check_outputs(out, rows, printed, str(tiny_llama_dir), str(tiny_gemma_dir), steps=4, n=4)
    # the report's heatmap: every pair of blocks 0..1
    grid = json.loads((out / "eval" / "texts.json").read_text())["gen/plural"]["inspect_grid"]
    assert grid["layers"] == [0, 1] and len(grid["rouge_l"]) == 2 and all(len(r) == 2 for r in grid["rouge_l"])


def test_demo_cli_passes_its_options(monkeypatch, tmp_path):
    """``soft2hard demo`` hands argv to run_demo (the tiny run above goes through run_demo directly, since the
    CLI always uses the shipped interpreters)."""
    import soft2hard.demo

    seen = {}
    monkeypatch.setattr(soft2hard.demo, "run_demo", lambda **kw: seen.update(kw))
    assert main(["--cache-dir", str(tmp_path), "demo", "--model", "m", "--task", "gen/antonym", "--out",
                 str(tmp_path / "o"), "--steps", "3", "--seed", "2", "--target", "t", "--max-examples", "5",
                 "--device", "cpu", "--amp", "bfloat16", "--quiet"]) == 0
    expected = {"model": "m", "task": "gen/antonym", "out": tmp_path / "o", "steps": 3, "seed": 2, "device": "cpu",
                "dtype": "float32", "amp": "bfloat16", "cache_dir": tmp_path, "target": "t", "max_examples": 5,
                "progress": False}
    assert {k: seen.get(k) for k in expected} == expected


def test_demo_cli_takes_a_translator_and_a_profile(monkeypatch, tmp_path):
    """``--translator``/``--profile`` reach run_demo (the shipped interpreters when they are not given)."""
    import soft2hard.demo

    seen = {}
    monkeypatch.setattr(soft2hard.demo, "run_demo", lambda **kw: seen.update(kw))
    assert main(["demo", "--translator", str(tmp_path / "tr"), "--profile", str(tmp_path / "p.json")]) == 0
    assert (seen["translator"], seen["profile"]) == (tmp_path / "tr", tmp_path / "p.json")
    assert main(["demo"]) == 0
    assert (seen["translator"], seen["profile"]) == (None, None)


@pytest.mark.slow
def test_demo_cli_on_builtin_models(tmp_path, capsys, cache_dir):
    """The README's first command through the CLI, on SmolLM2 -> Gemma3 with the shipped interpreters."""
    out = tmp_path / "demo"
    assert main(["--cache-dir", str(cache_dir), "demo", "--out", str(out), "--steps", "4", "--max-examples", "4",
                 "--device", "cpu", "--quiet"]) == 0
    rows = json.loads((out / "eval" / "results.json").read_text())
    printed = capsys.readouterr().out
    _check_outputs(out, rows, printed, "smollm2-135m", "gemma3-270m", steps=4, n=4)
    assert "gen/plural is not among the translator's training tasks" in printed  # no bank holds gen/plural
