"""The dataset of datasets: planning, references, a tiny end-to-end build (+ resume), packing, manifest errors."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open

import soft2hard.packs as packs
from soft2hard.dod import plan as planning
from soft2hard.dod.bank import pack
from soft2hard.dod.build import build, run_dir
from soft2hard.dod.config import BuildConfig
from soft2hard.dod.manifest import Manifest
from soft2hard.dod.references import reference_for, shorten
from soft2hard.errors import Soft2HardError
from soft2hard.tasks import get_task
from soft2hard.tasks.base import Example, Task
from tests.conftest import TASKS, TINY_TUNING, interrupt_on_call, tiny_config

# --- planning and references ---------------------------------------------------------------------------


def test_classification_plan_keeps_heldout_labels_out_of_training():
    planned = planning.plan_classification(seed=3, train=40, heldout=20, heldout_categories=12)
    train_labels = {x for t in planned if t.split == "train" for x in t.labels}
    held_labels = {x for t in planned if t.split == "heldout" for x in t.labels}
    assert len([t for t in planned if t.split == "heldout"]) == 20
    assert train_labels and held_labels and not (train_labels & held_labels)
    assert planning.heldout_label_leaks(planned) == []
    assert all(t.reference == ", ".join(t.labels) for t in planned)
    assert planned == planning.plan_classification(seed=3, train=40, heldout=20, heldout_categories=12)
    assert planned != planning.plan_classification(seed=4, train=40, heldout=20, heldout_categories=12)


def test_large_classification_plan_splits_its_own_categories():
    planned = planning.plan_large_classification(seed=1, train=50, heldout=12, heldout_categories=20)
    train = [t for t in planned if t.split == "train"]
    held = [t for t in planned if t.split == "heldout"]
    assert (len(train), len(held)) == (50, 12)
    categories_of = {t.name: set(t.name.removeprefix("cat/").split("-")) for t in planned}
    train_cats = set().union(*(categories_of[t.name] for t in train))
    held_cats = set().union(*(categories_of[t.name] for t in held))
    assert len(held_cats) <= 20 and not train_cats & held_cats
    assert not (train_cats | held_cats) & set(get_task("cat/fruit-tool").labels)  # the other inventory's names
    assert "animal" in planning.heldout_category_pool(1)[1] and not {c for c in train_cats if "animal" in c}
    assert planning.heldout_label_leaks(planned) == []
    assert planning.heldout_label_leaks(planned + planning.plan_classification(seed=1)) == []
    for t in planned:  # the labels are what the task answers, "_" read as a space
        assert t.labels == get_task(t.name).labels and t.reference == ", ".join(t.labels)
        assert all("_" not in label for label in t.labels)
    assert planned == planning.plan_large_classification(seed=1, train=50, heldout=12, heldout_categories=20)
    assert planned != planning.plan_large_classification(seed=2, train=50, heldout=12, heldout_categories=20)
    with pytest.raises(Soft2HardError, match="held-out categories must be between 4 and 159"):
        planning.plan_large_classification(heldout_categories=2)
    with pytest.raises(Soft2HardError, match="heldout_categories must be between 2 and 46"):
        planning.heldout_category_pool(0, heldout_categories=47)


def test_a_build_plans_the_large_classification_kind():
    from soft2hard.dod.config import make_plan

    cfg = BuildConfig(kinds=("classification_large",), large_classification_train=30, large_classification_heldout=6)
    planned = make_plan(cfg, cache_dir=None)
    assert [t.split for t in planned].count("heldout") == 6 and len(planned) == 36
    assert {t.kind for t in planned} == {"classification"}


def test_training_tasks_naming_a_heldout_label_are_dropped():
    held = planning.PlannedTask("cat/fruit-tool", "classification", "g1", "heldout", "fruit, tool", "labels",
                                ("fruit", "tool"))
    leaking = planning.PlannedTask("gen/fruit_or_animal", "general", "g2", "train", "x", "description",
                                   ("fruit", "animal"))
    fine = planning.PlannedTask("gen/plural", "general", "g3", "train", "y", "description")
    assert planning.heldout_label_leaks([held, leaking, fine]) == ["fruit"]
    assert planning.drop_leaking_train_tasks([held, leaking, fine]) == [held, fine]


def test_split_is_by_group():
    tasks = [planning.PlannedTask(f"t{i}", "general", f"g{i // 3}", "train", "r", "description") for i in range(12)]
    split = planning.split_groups(tasks, heldout=4, seed=0, kind="general")
    for g in {t.group for t in split}:
        assert len({t.split for t in split if t.group == g}) == 1
    assert sum(t.split == "heldout" for t in split) == 6  # two whole groups of 3


def test_references_prefer_informative_fields():
    assert shorten("Multilingual, Multilevel, Multidomain. Determine whether the opinion is positive.") == \
        "Determine whether the opinion is positive."
    long = " ".join(f"Sentence number {i} has five words." for i in range(20))
    assert len(shorten(long).split()) <= 40 and shorten(long).endswith(".")
    ni = Task("bigbench/natural_instructions/x", "bigbench", "Definition: In this task, write a question. More.",
              (Example("a", "b"),))
    assert reference_for(ni) == ("In this task, write a question. More.", "definition")
    plural = Task("bigbench/linguistic_mappings/plural_json", "bigbench", "A class for English plurals",
                  (Example("a", "b"),))
    assert reference_for(plural)[1] == "rewrite"


def test_category_tasks():
    task = get_task("cat/fruit-animal-tool")
    assert task.labels == ("fruit", "animal", "tool") and task.answer_type == "classification"
    assert {ex.target for ex in task.examples} == {"fruit", "animal", "tool"}
    with pytest.raises(Soft2HardError, match="unknown category"):
        get_task("cat/fruit-spaceship")
    with pytest.raises(Soft2HardError, match="distinct"):
        get_task("cat/fruit-fruit")


# --- the tiny end-to-end build -----------------------------------------------------------------------------


def test_build_writes_a_manifest_with_checkpoints_and_splits(tiny_dod):
    m = Manifest.load(tiny_dod)
    assert sorted(t.name for t in m.tasks) == sorted(TASKS)
    assert {t.split for t in m.tasks} == {"train", "heldout"}
    for t in m.tasks:
        assert [p.step for p in t.prompts] == [2, 4]
        assert sum(p.best for p in t.prompts) == 1
        assert t.reference and t.test_score is not None
    cat = next(t for t in m.tasks if t.name.startswith("cat/"))
    assert cat.kind == "classification" and cat.reference == "fruit, animal" and cat.labels == ("fruit", "animal")
    tensors = [x for _, _, x in m.iter_prompts()]
    assert len(tensors) == 6 and all(x.shape == (4, 64) for x in tensors)


def _prompts(manifest) -> dict:
    return {e.id: x for _, e, x in manifest.iter_prompts()}


def test_interrupted_pack_build_resumes_to_the_same_prompts(tmp_path, tiny_dod, tiny_llama_dir, cache_dir,
                                                             monkeypatch):
    # tiny_dod is built with the default --pack; interrupt a build mid-pack (a training step of the second
    # unit), rerun: the journal replays the pack, so every prompt is bit-identical
    out = tmp_path / "dod"
    interrupt_on_call(monkeypatch, packs, "_step", call=7)
    with pytest.raises(KeyboardInterrupt):
        build(out, tiny_config(tiny_llama_dir), cache_dir, workers=0, progress=False)
    monkeypatch.undo()
    assert list((out / "packs").glob("unit-*.json"))
    expected, got = _prompts(Manifest.load(tiny_dod)), _prompts(build(out, tiny_config(tiny_llama_dir), cache_dir,
                                                                      workers=0, progress=False))
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key


def test_interrupted_per_run_build_resumes_and_old_folders_resume_in_packs(tmp_path, tiny_llama_dir, cache_dir):
    ref_dir, out = tmp_path / "ref", tmp_path / "dod"
    cfg = tiny_config(tiny_llama_dir)
    ref = _prompts(build(ref_dir, cfg, cache_dir, workers=0, progress=False, pack=1))
    first = build(out, cfg, cache_dir, workers=0, progress=False, max_jobs=1, pack=1)
    assert len(first.tasks) == 1
    # a kill inside the second run: its first checkpoint exists, metrics.json does not
    second = [t for t in TASKS if t != first.tasks[0].name][0]
    shutil.copytree(run_dir(ref_dir, second, 0) / "checkpoints" / "step_000002",
                    run_dir(out, second, 0) / "checkpoints" / "step_000002")
    shutil.copy(run_dir(ref_dir, second, 0) / "config.json", run_dir(out, second, 0) / "config.json")
    before_packs = tmp_path / "before-packs"
    shutil.copytree(out, before_packs)  # a folder of the per-run build, as made before packs existed
    got = _prompts(build(out, cfg, cache_dir, workers=0, progress=False, pack=1))
    assert ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref)
    # the same half-built folder resumed with packs: same jobs, same prompts up to float rounding
    packed = _prompts(build(before_packs, cfg, cache_dir, workers=0, progress=False))
    assert ref.keys() == packed.keys() and all(torch.allclose(ref[k], packed[k], atol=1e-4) for k in ref)


def test_rebuild_with_other_settings_is_refused(tmp_path, tiny_dod, tiny_llama_dir, cache_dir):
    out = tmp_path / "copy"
    shutil.copytree(tiny_dod, out)
    with pytest.raises(Soft2HardError, match="other settings"):
        build(out, tiny_config(tiny_llama_dir, seeds=(0, 1)), cache_dir, workers=0, progress=False)


def test_ray_build_matches_in_process_build(tmp_path, tiny_dod, tiny_llama_dir, cache_dir):
    out = tmp_path / "ray"
    m = build(out, tiny_config(tiny_llama_dir), cache_dir, workers=2, progress=False)
    ref = {e.id: x for _, e, x in Manifest.load(tiny_dod).iter_prompts()}
    got = {e.id: x for _, e, x in m.iter_prompts()}
    assert ref.keys() == got.keys()
    # Ray workers run with 1 thread each: same prompts up to float summation order
    assert all(torch.allclose(ref[k], got[k], atol=1e-4) for k in ref)


def test_pack_makes_a_compact_bank_with_the_same_prompts(tmp_path, tiny_dod):
    m = Manifest.load(tiny_dod)
    bank = pack(m, tmp_path / "bank")
    loaded = Manifest.load(tmp_path / "bank")
    assert [t.name for t in loaded.tasks] == [t.name for t in m.tasks]
    ref = {e.id: x for _, e, x in m.iter_prompts()}
    for _, e, x in loaded.iter_prompts():
        assert e.key == e.id and e.file == "prompts.safetensors"
        assert x.dtype == torch.float32 and torch.equal(x, ref[e.id].half().float())  # stored in fp16, exactly
    with safe_open(tmp_path / "bank" / "prompts.safetensors", "pt") as f:
        assert sorted(f.keys()) == sorted(ref) and {f.get_slice(k).get_dtype() for k in f.keys()} == {"F16"}
    assert len(bank.tasks) == 3
    best = pack(m, tmp_path / "best", best_only=True)
    assert all(len(t.prompts) == 1 and t.prompts[0].best for t in best.tasks)
    # a job whose best checkpoint is not marked (e.g. stopped before its validation) keeps all its prompts
    first = m.tasks[0]
    unmarked = dataclasses.replace(first, prompts=tuple(dataclasses.replace(e, best=False) for e in first.prompts))
    m.tasks[0] = unmarked
    best = pack(m, tmp_path / "best2", best_only=True)
    assert [len(t.prompts) for t in best.tasks] == [len(first.prompts)] + [1] * (len(m.tasks) - 1)


# --- manifest errors -----------------------------------------------------------------------------------------


def _corrupt(tmp_path, tiny_dod, edit) -> object:
    out = tmp_path / "bad"
    shutil.copytree(tiny_dod, out)
    data = json.loads((out / "manifest.json").read_text())
    edit(data, out)
    (out / "manifest.json").write_text(json.dumps(data) if isinstance(data, dict) else data)
    return out


@pytest.mark.parametrize("edit, message", [
    (lambda d, o: d.pop("tasks"), "missing field 'tasks'"),
    (lambda d, o: d.update(format="other"), "not a soft2hard DoD manifest"),
    (lambda d, o: d.update(version=99), "version 99"),
    (lambda d, o: d["tasks"][0].update(split="dev"), "split 'dev'"),
    (lambda d, o: d["tasks"][0]["prompts"][0].update(step="two"), "'step' has the wrong type"),
    (lambda d, o: d["tasks"][0]["prompts"][0].update(file="../../etc/passwd"), "relative path inside"),
    (lambda d, o: d["tasks"][0]["prompts"][0].update(file="/etc/passwd"), "relative path inside"),
])
def test_bad_manifest_fields_are_one_line_errors(tmp_path, tiny_dod, edit, message):
    out = _corrupt(tmp_path, tiny_dod, edit)
    with pytest.raises(Soft2HardError, match=message) as err:
        Manifest.load(out)
    assert "\n" not in str(err.value) and "manifest.json" in str(err.value)


def test_missing_prompt_file_and_truncated_manifest(tmp_path, tiny_dod):
    out = tmp_path / "bad"
    shutil.copytree(tiny_dod, out)
    m = Manifest.load(out)
    shutil.rmtree(out / m.tasks[0].prompts[0].file)
    with pytest.raises(Soft2HardError, match="is missing"):
        list(m.iter_prompts())
    text = (out / "manifest.json").read_text()
    (out / "manifest.json").write_text(text[: len(text) // 2])
    proc = subprocess.run([sys.executable, "-m", "soft2hard.cli", "dod", "show", str(out)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "invalid JSON" in proc.stderr


def test_distilled_kind_compresses_each_general_reference(tmp_path, tiny_llama_dir, cache_dir):
    cfg = BuildConfig(model=str(tiny_llama_dir), tasks=("gen/plural", "gen/first_letter", "cat/fruit-animal"),
                      kinds=("general", "classification", "distilled"), general_heldout=1, amp="none",
                      tuning=TINY_TUNING)
    m = build(tmp_path / "d", cfg, cache_dir, workers=0, progress=False)
    distilled = [t for t in m.tasks if t.kind == "distilled"]
    general = {t.name: t for t in m.tasks if t.kind == "general"}
    assert sorted(t.name for t in distilled) == sorted("distilled/" + n for n in general)
    for t in distilled:
        source = general[t.name.removeprefix("distilled/")]
        assert t.reference == source.reference and t.split == source.split and t.labels is None
        metrics = json.loads((run_dir(tmp_path / "d", t.name, 0) / "metrics.json").read_text())
        assert metrics["objective"] == "distill" and metrics["teacher_prompt"] == source.reference
        assert "faithfulness" in metrics


def test_extra_instructions_are_distilled_on_a_general_tasks_inputs_in_its_split(tmp_path, tiny_llama_dir,
                                                                                 cache_dir):
    from soft2hard.evaluation.items import from_dod

    path = tmp_path / "instructions.jsonl"
    texts = {"gen/plural": "Write the noun in its plural form.", "gen/first_letter": "Which letter does it start with?"}
    path.write_text("".join(json.dumps({"inputs": k, "text": v}) + "\n\n" for k, v in texts.items()))
    cfg = BuildConfig(model=str(tiny_llama_dir), tasks=("gen/plural", "gen/first_letter"), general_heldout=1,
                      kinds=("general", "distilled"), amp="none", tuning=TINY_TUNING,
                      instructions=planning.load_instructions(path))
    m = build(tmp_path / "d", cfg, cache_dir, workers=0, progress=False)
    general = {t.name: t for t in m.tasks if t.kind == "general"}
    extra = [t for t in Manifest.load(tmp_path / "d").tasks if t.reference_source == "instructions"]
    assert len(extra) == 2 and {t.inputs for t in extra} == set(texts)
    for t in extra:
        assert t.kind == "distilled" and t.reference == texts[t.inputs] and t.split == general[t.inputs].split
        assert t.inputs_task == t.inputs and t.name.startswith(f"distilled/{t.inputs}/text-")
        metrics = json.loads((run_dir(tmp_path / "d", t.name, 0) / "metrics.json").read_text())
        assert metrics["teacher_prompt"] == texts[t.inputs]
    _, items = from_dod(tmp_path / "d", [t.name for t in extra], cache_dir)
    assert sorted(i.task.name for i in items) == sorted(t.name for t in extra)
    assert {len(i.task.examples) for i in items} == {len(get_task(n, cache_dir).examples) for n in texts}


@pytest.mark.parametrize("content, message", [
    ('{"inputs": "gen/plural"}\n', "instructions.jsonl:1: expected an object"),
    ('{"inputs": "gen/plural", "text": "x"}\nnot json\n', "instructions.jsonl:2: invalid JSON"),
    ("\n", "no instructions"),
    ('{"inputs": "gen/antonym", "text": "Give the opposite."}\n', "'gen/antonym' is not a general task"),
])
def test_bad_instruction_files_are_one_line_errors(tmp_path, tiny_llama_dir, cache_dir, content, message):
    path = tmp_path / "instructions.jsonl"
    path.write_text(content)
    proc = subprocess.run([sys.executable, "-m", "soft2hard.cli", "--cache-dir", str(cache_dir), "dod", "build",
                           "--out", str(tmp_path / "d"), "--model", str(tiny_llama_dir), "--tasks",
                           "gen/plural,gen/number_parity", "--general-heldout", "1", "--kinds", "general,distilled",
                           "--instructions", str(path), "--workers", "0", "--quiet"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and message in proc.stderr
    assert proc.stderr.strip().count("\n") == 0, proc.stderr


def test_instructions_need_the_distilled_kind():
    with pytest.raises(Soft2HardError, match="add 'distilled' to the kinds"):
        BuildConfig(kinds=("general",), instructions=(("gen/plural", "Pluralise."),))


def test_only_split_runs_one_split_now_and_a_later_build_the_rest(tmp_path, tiny_llama_dir, cache_dir):
    cfg = BuildConfig(model=str(tiny_llama_dir), tasks=("gen/plural", "gen/first_letter", "gen/antonym"),
                      general_heldout=1, kinds=("general",), amp="none", tuning=TINY_TUNING)
    m = build(tmp_path / "d", cfg, cache_dir, workers=0, progress=False, only_split="train")
    assert m.tasks and {t.split for t in m.tasks} == {"train"}
    full = build(tmp_path / "d", cfg, cache_dir, workers=0, progress=False)
    assert {t.split for t in full.tasks} == {"train", "heldout"} and len(full.tasks) == 3
    assert [p.to_dict() for t in m.tasks for p in t.prompts] == \
        [p.to_dict() for t in full.tasks if t.split == "train" for p in t.prompts]
