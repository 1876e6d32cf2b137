"""``soft2hard evaluate``: prompt formats, answer scoring, the results folder, resume after an interruption,
settings checks and the CLI contract. Source: the tiny Llama with the tiny DoD's prompts; target: the tiny Gemma."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import subprocess
import sys

import pytest

from soft2hard.errors import Soft2HardError
from soft2hard.evaluation import EvalConfig, LazyTarget, SourceSide, evaluate, run
from soft2hard.evaluation import conditions as cond
from soft2hard.evaluation.items import bare, from_dod
from soft2hard.evaluation.source import slug
from soft2hard.models import load_model
from soft2hard.targets import LocalTarget
from soft2hard.tasks import get_task
from soft2hard.tasks.base import Example
from tests.conftest import interrupt_on_call

ALL = ("soft_prompt", "zero_shot", "few_shot", "reference", "projection", "inspect", "translator", "pez",
       "translator_selected", "induced", "translator+few_shot", "reference+few_shot")


def test_prompt_formats_follow_the_paper():
    demos = [Example("cat", "cats"), Example("dog", "dogs")]
    assert cond.target_prompts("zero_shot", [Example("box", "boxes")]) == ["Input:\nbox\n\nOutput:\n"]
    assert cond.target_prompts("reference", [Example("box", "boxes")], "Give the plural.") == [
        "Give the plural.\n\nInput:\nbox\n\nOutput:\n"]
    assert cond.target_prompts("few_shot", [Example("box", "boxes")], demos=demos) == [
        "Input:\ncat\n\nOutput:\ncats\n\nInput:\ndog\n\nOutput:\ndogs\n\nInput:\nbox\n\nOutput:\n"]
    with pytest.raises(ValueError):
        cond.target_prompts("translator", [Example("box", "boxes")])
    train = [Example(str(i), str(i)) for i in range(20)]
    assert cond.few_shot_demos(train, 3, seed=1) == cond.few_shot_demos(train, 3, seed=1)
    assert cond.few_shot_demos(train, 3, seed=1) != cond.few_shot_demos(train, 3, seed=2)
    assert len(cond.few_shot_demos(train[:2], 5, seed=0)) == 2


def test_answers_are_scored_from_their_first_line():
    task = get_task("gen/word_sentiment")
    assert cond.match_label("\n  Positive.\nmore text", task.labels) == "positive"
    assert cond.match_label("negative: a bad word", task.labels) == "negative"
    assert cond.match_label("positively", task.labels) is None  # a label must end at a word boundary
    assert cond.match_label("", task.labels) is None
    s = cond.score_outputs(task, ["positive", "Negative!", "maybe"], ["positive", "negative", "negative"])
    assert s["metric"] == "accuracy" and s["score"] == pytest.approx(2 / 3) and s["rouge_l"] is None
    gen = get_task("gen/plural")
    s = cond.score_outputs(gen, ["\ncats\n", "big dogs"], ["cats", "dogs"])
    assert s["metric"] == "rouge_l" and s["exact_match"] == 0.5 and 0.5 < s["score"] < 1.0
    with pytest.raises(ValueError):
        cond.score_outputs(gen, ["a"], [])


def _run(out, tiny_dod, tiny_llama_dir, tiny_gemma_dir, tiny_translator, tiny_profile, conditions=ALL,
         max_examples=3, **kw):
    model, items = from_dod(tiny_dod, ["all"], cache_dir=out.parent)
    source = SourceSide(str(tiny_llama_dir), out.parent, device="cpu", translator_dir=tiny_translator,
                        profile=tiny_profile, progress=False)
    target = LazyTarget(f"local:{tiny_gemma_dir.name}",
                        lambda: LocalTarget(load_model(str(tiny_gemma_dir), device="cpu")))
    cfg = EvalConfig(conditions=conditions, max_examples=max_examples, faithfulness_examples=2, pez_steps=2,
                     inspect_grid="0-1", candidates=3, selection_inputs=2, induction_examples=2, **kw)
    return items, evaluate(items, source, model, [target], cfg, out, progress=False)


@pytest.fixture(scope="module")
def full(tmp_path_factory, tiny_dod, tiny_llama_dir, tiny_gemma_dir, tiny_translator, tiny_profile):
    out = tmp_path_factory.mktemp("eval") / "full"
    items, rows = _run(out, tiny_dod, tiny_llama_dir, tiny_gemma_dir, tiny_translator, tiny_profile)
    return out, items, rows


def test_every_task_gets_every_condition(full, tiny_dod, tiny_gemma_dir):
    out, items, rows = full
    source_model, _ = from_dod(tiny_dod, ["all"], cache_dir=out.parent)
    keys = {(r["task"], r["condition"]) for r in rows}
    assert keys == {(i.name, c) for i in items for c in ALL}
    assert len(rows) == len(keys)
    for r in rows:
        assert 0.0 <= r["score"] <= 1.0 and r["n"] == min(3, len(items[0].test(3)))
        # the soft prompt runs on its source model, every text on the target
        assert r["model"] == (source_model if r["condition"] == "soft_prompt" else f"local:{tiny_gemma_dir.name}")
        if r["condition"] in cond.TEXT_CONDITIONS and r["instruction"]:  # translator_selected may send no text
            assert isinstance(r["instruction"], str) and r["perplexity"] > 0 and 0 <= r["faithfulness"] <= 1
    texts = json.loads((out / "texts.json").read_text())
    for i in items:
        entry = texts[i.name]
        assert set(entry["texts"]) == set(cond.TEXT_CONDITIONS) & set(ALL) and entry["reference"] == i.reference
        assert entry["texts"]["reference"]["text"] == i.reference
        grid = entry["inspect_grid"]
        assert grid["layers"] == [0, 1] and len(grid["rouge_l"]) == 2 and len(grid["rouge_l"][0]) == 2
    preds = json.loads((out / "predictions.json").read_text())
    assert set(preds) == {f"{r['model']}|{r['task']}|{r['condition']}" for r in rows}
    by_name = {i.name: i for i in items}
    for r in rows:  # every reported score is the score of the predictions written for it
        records = preds[f"{r['model']}|{r['task']}|{r['condition']}"]
        item = by_name[r["task"]]
        assert len(records) == r["n"]
        assert [(x["input"], x["gold"]) for x in records] == [(ex.input, ex.target) for ex in item.test(3)]
        outputs, golds = [x["output"] for x in records], [x["gold"] for x in records]
        assert all(isinstance(o, str) for o in outputs)
        again = cond.score_outputs(item.task, outputs, golds)
        assert (r["metric"], r["score"], r["exact_match"]) == (again["metric"], again["score"], again["exact_match"])
        # and, independently of score_outputs, the exact-match rate of the answer lines
        exact = sum(cond.normalize(cond.answer_line(o)) == cond.normalize(g) for o, g in zip(outputs, golds))
        assert r["exact_match"] == pytest.approx(exact / len(golds))


def test_tables_match_the_rows(full):
    out, items, rows = full
    summary = json.loads((out / "summary.json").read_text())
    for model, by_cond in summary["by_model"].items():
        for c, stats in by_cond.items():
            scores = [r["score"] for r in rows if r["model"] == model and r["condition"] == c]
            assert stats["n_tasks"] == len(scores) and math.isclose(stats["mean"], sum(scores) / len(scores),
                                                                    abs_tol=1e-4)
    with open(out / "results.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(rows) and {"task", "condition", "model", "score"} <= set(table[0])
    md = (out / "results.md").read_text()
    assert all(i.name in md for i in items) and "mean ± std" in md


def test_an_interrupted_evaluation_resumes_to_the_same_rows(tmp_path, monkeypatch, full, tiny_dod, tiny_llama_dir,
                                                            tiny_gemma_dir, tiny_translator, tiny_profile):
    _, _, reference = full
    out = tmp_path / "run"
    interrupt_on_call(monkeypatch, run, "_target_cell", 4)
    with pytest.raises(KeyboardInterrupt):
        _run(out, tiny_dod, tiny_llama_dir, tiny_gemma_dir, tiny_translator, tiny_profile)
    finished = json.loads((out / "results.json").read_text())
    assert 0 < len(finished) < len(reference)
    monkeypatch.undo()
    calls = {"n": 0}
    real = run._target_cell

    def counted(*a, **k):
        calls["n"] += 1
        return real(*a, **k)

    monkeypatch.setattr(run, "_target_cell", counted)
    _, rows = _run(out, tiny_dod, tiny_llama_dir, tiny_gemma_dir, tiny_translator, tiny_profile)
    target_done = sum(r["condition"] != "soft_prompt" for r in finished)
    assert calls["n"] == sum(r["condition"] != "soft_prompt" for r in reference) - target_done
    key = lambda r: (r["model"], r["task"], r["condition"])  # noqa: E731
    assert sorted(rows, key=key) == sorted(reference, key=key)


def test_other_settings_are_refused(full, tiny_dod, tiny_llama_dir, tiny_gemma_dir, tiny_translator, tiny_profile):
    out, _, _ = full
    with pytest.raises(Soft2HardError, match="other settings.*max_examples"):
        _run(out, tiny_dod, tiny_llama_dir, tiny_gemma_dir, tiny_translator, tiny_profile, max_examples=2)


def test_a_folder_from_before_a_setting_existed_resumes_at_its_default(tmp_path):
    """settings.json without the RLPrompt settings (added later) matches the defaults, and only them."""
    cfg = EvalConfig(conditions=("zero_shot",))
    settings = {"version": run.SETTINGS_VERSION, **run.json_ready(dataclasses.asdict(cfg))}
    old = {k: v for k, v in settings.items() if not k.startswith("rlprompt_")}
    (tmp_path / "settings.json").write_text(json.dumps(old))
    run.check_settings(tmp_path, settings)  # no error
    changed = {**settings, "rlprompt_weight": 0.5}
    with pytest.raises(Soft2HardError, match="other settings .rlprompt_weight"):
        run.check_settings(tmp_path, changed)


def test_bad_configs_and_missing_prompts(tmp_path, tiny_llama_dir):
    with pytest.raises(Soft2HardError, match="unknown condition"):
        EvalConfig(conditions=("soft_prompt", "telepathy"))
    with pytest.raises(Soft2HardError, match="k_shot"):
        EvalConfig(k_shot=0)
    items = bare(["gen/plural"], tmp_path)
    source = SourceSide(str(tiny_llama_dir), tmp_path, device="cpu", progress=False)
    with pytest.raises(Soft2HardError, match="no soft prompt for gen/plural"):
        evaluate(items, source, "m", [], EvalConfig(), tmp_path / "x", progress=False)
    with pytest.raises(Soft2HardError, match="no target model"):
        evaluate(items, source, "m", [], EvalConfig(conditions=("zero_shot",)), tmp_path / "x", progress=False)


def test_rlprompt_condition_is_optimized_on_the_source_and_refuses_generation_tasks(
        tmp_path, tiny_dod, tiny_llama_dir, tiny_gemma_dir):
    """The rlprompt text comes from an RLPrompt run on the source model (seeded with the task's split seed,
    resumable under OUT/rlprompt/) and is scored like every other text; generation tasks are refused up front."""
    model, items = from_dod(tiny_dod, ["cat/fruit-animal"], cache_dir=tmp_path)
    source = SourceSide(str(tiny_llama_dir), tmp_path, device="cpu", progress=False)
    target = LazyTarget("local:gemma", lambda: LocalTarget(load_model(str(tiny_gemma_dir), device="cpu")))
    cfg = EvalConfig(conditions=("rlprompt",), max_examples=3, faithfulness_examples=2, rlprompt_steps=2,
                     rlprompt_weight=0.2)
    rows = evaluate(items, source, model, [target], cfg, tmp_path / "ev", progress=False)
    assert [(r["task"], r["condition"]) for r in rows] == [("cat/fruit-animal", "rlprompt")]
    run_dir = tmp_path / "ev" / "rlprompt" / slug("cat/fruit-animal")
    result = json.loads((run_dir / "result.json").read_text())
    config = json.loads((run_dir / "config.json").read_text())
    assert (config["steps"], config["weight"], config["seed"]) == (2, 0.2, items[0].split_seed)
    text = json.loads((tmp_path / "ev" / "texts.json").read_text())["cat/fruit-animal"]["texts"]["rlprompt"]
    assert text["text"] == result["text"] == rows[0]["instruction"] and text["ids"] == result["ids"]
    assert rows[0]["perplexity"] > 0 and 0 <= rows[0]["faithfulness"] <= 1 and 0 <= rows[0]["score"] <= 1

    _, mixed = from_dod(tiny_dod, ["all"], cache_dir=tmp_path)
    with pytest.raises(Soft2HardError, match="rlprompt condition needs classification tasks; gen/"):
        evaluate(mixed, source, model, [target], cfg, tmp_path / "mixed", progress=False)
    with pytest.raises(Soft2HardError, match="rlprompt_weight"):
        EvalConfig(rlprompt_weight=-1.0)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "soft2hard.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=600)


def test_cli_contract_and_report(tmp_path, tiny_dod, tiny_llama_dir, tiny_gemma_dir):
    out = tmp_path / "ev"
    proc = _cli("evaluate", "--dod", tiny_dod, "--tasks", "heldout", "--model", tiny_llama_dir, "--target",
                tiny_gemma_dir, "--conditions", "soft_prompt,zero_shot,few_shot,reference,projection",
                "--max-examples", 2, "--out", out, "--quiet")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads((out / "results.json").read_text())
    assert rows and all({"task", "condition", "model", "score"} <= set(r) for r in rows)
    assert {r["condition"] for r in rows} == {"soft_prompt", "zero_shot", "few_shot", "reference", "projection"}
    proc = _cli("report", out)
    assert proc.returncode == 0, proc.stderr
    assert (out / "report.html").is_file() and "soft2hard evaluation" in (out / "report.html").read_text()
    for bad, message in [(("--dod", tmp_path / "nope", "--tasks", "heldout"), "no DoD manifest"),
                         (("--dod", tiny_dod, "--tasks", "no/such_task"), "no task 'no/such_task'"),
                         (("--dod", tiny_dod, "--tasks", "heldout", "--conditions", "vibes"), "unknown condition")]:
        proc = _cli("evaluate", *bad, "--out", tmp_path / "bad", "--model", tiny_llama_dir)
        assert proc.returncode == 2 and message in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
