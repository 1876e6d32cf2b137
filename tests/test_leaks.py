"""Held-out leaks (issue 19): held-out labels named in training references, gen/* template families kept on one
side of the split, and held-out evaluation that leaves leaking tasks out."""

from __future__ import annotations

import itertools
import json
import logging
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from soft2hard.dod import plan as planning
from soft2hard.dod.config import PLAN_NAME, BuildConfig, load_or_create_plan, make_plan
from soft2hard.dod.manifest import Manifest, PromptEntry, TaskEntry
from soft2hard.metrics import rouge_l_score
from soft2hard.tasks import generated
from soft2hard.tasks.base import Example, Task

BANK = Path(__file__).resolve().parents[1] / "dod" / "smollm2-135m"
LANGUAGE_ID = "Identify the language a given sentence is written in."


def planned(name, split, reference, kind="general", labels=None, group=None, **kw):
    return planning.PlannedTask(name, kind, group or name, split, reference,
                                "labels" if kind == "classification" else "description", labels, **kw)


def cat(labels, split):
    name = "cat/" + "-".join(labels)
    return planned(name, split, ", ".join(labels), "classification", tuple(labels))


# --- held-out labels in training references ---------------------------------------------------------------


@pytest.mark.parametrize("text, word, found", [
    (LANGUAGE_ID, "language", True),
    ("This task tests whether a Language Model can answer", "language", True),  # case-insensitive
    ("understand the sequential ordering of languages", "language", True),  # plural
    ("Multilingual, Multilevel, Multidomain.", "language", False),
    ("All facts in this task refer to science facts.", "science", True),
    ("Answer questions about scientific facts.", "science", False),  # a word, not a substring
    ("Convert between units.", "unit", True),
    ("a community of", "unit", False),
    ("Sort the boxes.", "box", True),  # -es plural
    ("fruit, tool", "fruit", True),
])
def test_mentions_is_whole_word_case_insensitive(text, word, found):
    assert planning.mentions(text, word) is found


def test_a_heldout_label_in_a_general_training_reference_is_a_leak():
    held = cat(("spice", "language", "science"), "heldout")
    lang = planned("bigbench/language_identification", "train", LANGUAGE_ID)
    sci = planned("bigbench/natural_instructions/subtask043_x", "train",
                  "In this task, you need to answer basic science questions.")
    fine = planned("gen/plural", "train", "Output the plural form of the given English noun.")
    tasks = [held, lang, sci, fine]
    assert planning.heldout_label_leaks(tasks) == ["language", "science"]
    assert planning.label_leaks(tasks) == {"language": [lang.name], "science": [sci.name]}
    assert "language" in planning.heldout_leaks(tasks)[held.name]
    # the training tasks go, the held-out label set stays (documented in drop_leaking_train_tasks)
    kept = planning.drop_leaking_train_tasks(tasks)
    assert kept == [held, fine]
    assert planning.heldout_label_leaks(kept) == [] and planning.heldout_leaks(kept) == {}


def test_every_kind_of_training_target_counts():
    held = cat(("bird", "city"), "heldout")
    labels = planned("bigbench/x", "train", "Pick one.", labels=("city", "village"))
    distilled = planned("distilled/gen/plural/text-1", "train", "Name the bird.", kind="distilled",
                        inputs="gen/plural", teacher_prompt="Name the bird.")
    instruction = replace(distilled, name="distilled/gen/plural/text-2", reference="Name the city.",
                          teacher_prompt="Name the city.")
    train_cat = cat(("tool", "fish"), "train")
    held_general = planned("gen/antonym", "heldout", "Output the opposite (antonym) of the given word.")
    tasks = [held, labels, distilled, instruction, train_cat, held_general]
    assert planning.label_leaks(tasks) == {"bird": [distilled.name], "city": [labels.name, instruction.name]}
    assert planning.drop_leaking_train_tasks(tasks) == [held, train_cat, held_general]
    # only held-out *classification* labels are checked: a general task's reference is its instruction
    assert planning.heldout_label_leaks([held_general, planned("bigbench/y", "train", "opposite antonym")]) == []


def test_the_planner_drops_training_tasks_whose_reference_names_a_heldout_category(monkeypatch, tmp_path):
    """make_plan (general + classification) ends with no leak and every held-out label set intact."""
    classification = planning.plan_classification(seed=0, train=20, heldout=10, heldout_categories=8)
    held_cats = sorted({x for t in classification if t.split == "heldout" for x in t.labels})
    general = [planned(f"bigbench/task{i}", "train", f"Answer questions about the {c}s in a text.", group=f"g{i}")
               for i, c in enumerate(held_cats)]
    general += [planned(f"bigbench/other{i}", "train", "Answer questions about the text.", group=f"h{i}")
                for i in range(6)]
    general.append(planned("bigbench/held", "heldout", f"Find the {held_cats[0]}.", group="held"))
    monkeypatch.setattr(planning, "plan_general", lambda *a, **k: list(general))
    monkeypatch.setattr(planning, "plan_classification", lambda *a, **k: list(classification))
    plan = make_plan(BuildConfig(), tmp_path)
    assert planning.heldout_label_leaks(plan) == [] and planning.heldout_leaks(plan) == {}
    assert [t for t in plan if t.split == "heldout"] == [t for t in general + classification if t.split == "heldout"]
    assert sorted(t.name for t in plan if t.kind == "general" and t.split == "train") == \
        [f"bigbench/other{i}" for i in range(6)]


# --- the committed bank ------------------------------------------------------------------------------------


def test_committed_bank_leaks_are_found_and_excluded(caplog):
    bank = Manifest.load(BANK)
    leaks = bank.heldout_leaks()
    assert sorted(planning.label_leaks(bank.tasks)) == ["language", "science"]
    assert "bigbench/language_identification" in planning.label_leaks(bank.tasks)["language"]
    assert "cat/spice-language-science" in leaks and "gen/word_sentiment" in leaks
    assert "say_whether" in leaks["gen/word_sentiment"]  # its template family trains gen/fruit_or_animal
    for t in bank.split("heldout", "classification"):
        assert (t.name in leaks) == bool({"language", "science"} & set(t.labels))
    with caplog.at_level(logging.WARNING, logger="soft2hard.dod.manifest"):
        clean = bank.clean_heldout()
    assert [t.name for t in clean] == [t.name for t in bank.split("heldout") if t.name not in leaks]
    assert f"{len(leaks)} of {len(bank.split('heldout'))} held-out tasks are excluded" in caplog.text
    targets = [text for t in bank.split("train") for text in planning._target_texts(t)]
    for t in bank.clean_heldout("classification"):
        assert not any(planning.mentions(text, label) for text in targets for label in t.labels)


# --- held-out evaluation skips leaking tasks ---------------------------------------------------------------


def _leaky_manifest(root: Path, d_model: int = 64) -> Manifest:
    root.mkdir(parents=True, exist_ok=True)
    save_file({"p": torch.randn(2, d_model)}, str(root / "p.safetensors"))
    prompts = (PromptEntry("p", "p.safetensors", seed=0, step=1, validation_score=None, best=True),)

    def entry(name, kind, split, reference, labels=None):
        return TaskEntry(name, kind, name, split, reference, "labels" if labels else "description", labels, prompts)

    return Manifest(root=root, model="m", settings={}, tasks=[
        entry("cat/fruit-tool", "classification", "heldout", "fruit, tool", ("fruit", "tool")),
        entry("cat/bird-city", "classification", "heldout", "bird, city", ("bird", "city")),
        entry("gen/word_sentiment", "general", "heldout", "Say whether the given word has a positive or a negative "
              "meaning."),
        entry("gen/next_number", "general", "heldout", "Output the number that comes right after the given number."),
        entry("gen/number_parity", "general", "train", "Say whether the given number is even or odd."),
        entry("bigbench/x", "general", "train", "Name the fruit in the sentence."),
    ])


def test_from_dod_heldout_takes_only_clean_tasks(tmp_path, caplog):
    from soft2hard.evaluation.items import from_dod

    m = _leaky_manifest(tmp_path / "d")
    (tmp_path / "d" / "manifest.json").write_text(json.dumps(m.to_dict()))
    assert set(m.heldout_leaks()) == {"cat/fruit-tool", "gen/word_sentiment"}
    with caplog.at_level(logging.WARNING):
        _, items = from_dod(tmp_path / "d", ["heldout"], tmp_path)
    assert [i.task.name for i in items] == ["cat/bird-city", "gen/next_number"]
    assert "2 of 4 held-out tasks are excluded" in caplog.text and "'fruit'" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        _, items = from_dod(tmp_path / "d", ["cat/fruit-tool"], tmp_path)  # asked for by name: kept, with a warning
    assert [i.task.name for i in items] == ["cat/fruit-tool"] and "leaks into translator training" in caplog.text


def test_translator_eval_leaves_leaking_heldout_tasks_out(tmp_path, tiny_llama_dir, caplog):
    from soft2hard.interpret.comparison import compare_interpreters
    from soft2hard.interpret.selection import Profile

    m = _leaky_manifest(tmp_path / "d")
    m.model = str(tiny_llama_dir)
    Profile(model=str(tiny_llama_dir), pairs=[(1, 1)], metric="rouge_l", n_prompts=0,
            inspect={"max_new_tokens": 4}).save(tmp_path / "p.json")
    with caplog.at_level(logging.WARNING):
        rows, summary = compare_interpreters(m, None, tmp_path, device="cpu", progress=False,
                                            methods=("projection",), profile_path=tmp_path / "p.json")
    assert sorted({r["task"] for r in rows}) == ["cat/bird-city", "gen/next_number"]
    assert summary["classification"]["projection"]["n"] == 1
    assert "2 of 4 held-out tasks are excluded" in caplog.text


def test_the_leak_check_says_when_the_translators_training_tasks_are_not_in_the_dod(tmp_path, caplog):
    """A DoD that lacks the translator's training tasks (fresh prompts in their own manifest) cannot show that their
    references name a held-out label: the check says so instead of passing silently."""
    m = _leaky_manifest(tmp_path / "d")
    trained = [t.name for t in m.tasks if t.split == "train"]
    with caplog.at_level(logging.WARNING):
        m.clean_heldout(trained_on=trained)
    assert "not in this DoD" not in caplog.text
    with caplog.at_level(logging.WARNING):
        m.clean_heldout(trained_on=[*trained, "bigbench/some_other_task"])
    assert "1 of the translator's" in caplog.text and "bigbench/some_other_task" in caplog.text


# --- gen/* template families -------------------------------------------------------------------------------


def test_gen_tasks_of_one_template_family_share_a_group():
    assert planning._group_of("gen/number_parity") == planning._group_of("gen/word_sentiment") == \
        planning._group_of("gen/fruit_or_animal") == "gen/say_whether"
    assert planning._group_of("gen/first_letter") == planning._group_of("gen/last_letter")
    assert planning._group_of("gen/uppercase") == "gen/uppercase"  # a template of its own: as before
    assert planning._group_of("gen/number_parity") != planning._group_of("gen/next_number")
    assert generated.load_generated("gen/word_sentiment").metadata["family"] == "say_whether"


def test_families_cover_every_near_identical_pair_of_descriptions():
    """Any two generated descriptions as close as ROUGE-L 0.5 are in one family (one split group)."""
    names = generated.generated_names()
    for a, b in itertools.combinations(names, 2):
        da, db = generated.load_generated(a).description, generated.load_generated(b).description
        if rouge_l_score(da, db) >= 0.5:
            assert generated.family_of(a) == generated.family_of(b), (a, b, rouge_l_score(da, db))
    assert len({generated.family_of(n) for n in names}) >= 6  # still enough groups to split


def _fake_bigbench(i: int) -> Task:
    return Task(f"bigbench/fake{i}", "bigbench", f"Do thing number {i} to the text.",
                tuple(Example(str(j), "x") for j in range(50)))


@pytest.mark.parametrize("seed", range(12))
def test_the_general_split_never_separates_a_family(monkeypatch, tmp_path, seed):
    tasks = [generated.load_generated(n) for n in generated.generated_names()] + [_fake_bigbench(i) for i in range(6)]
    monkeypatch.setattr(planning, "general_candidates", lambda *a, **k: list(tasks))
    plan = planning.plan_general(tmp_path, seed=seed, heldout=7)
    gen = [t for t in plan if t.name.startswith("gen/")]
    for family in {generated.family_of(t.name) for t in gen}:
        assert len({t.split for t in gen if generated.family_of(t.name) == family}) == 1, family
    assert planning.heldout_leaks(plan) == {}


def test_explicit_plans_keep_families_together_and_say_when_they_cannot(tmp_path, caplog):
    plan = planning.plan_explicit(["gen/plural", "gen/first_letter", "cat/fruit-animal"], tmp_path, heldout=1)
    assert len({t.split for t in plan if t.name.startswith("gen/")}) == 1 and planning.heldout_leaks(plan) == {}
    with caplog.at_level(logging.WARNING, logger="soft2hard.dod.plan"):
        plan = planning.plan_explicit(["gen/plural", "gen/first_letter"], tmp_path, heldout=1)
    assert {t.split for t in plan} == {"train", "heldout"} and "task by task" in caplog.text
    assert len(planning.heldout_leaks(plan)) == 1  # the split it had to make is reported as a leak


def test_a_stored_plan_is_reloaded_with_its_old_groups(tmp_path):
    """Grouping by family changes new plans only: plan.json, written at the first build, is reused as stored."""
    cfg = BuildConfig(tasks=("gen/number_parity", "gen/word_sentiment", "gen/plural"), general_heldout=1)
    old = [planned(name, split, generated.load_generated(name).description,
                   labels=generated.load_generated(name).labels)
           for name, split in (("gen/number_parity", "train"), ("gen/word_sentiment", "heldout"),
                               ("gen/plural", "train"))]
    settings = json.loads(json.dumps(asdict(cfg)))
    (tmp_path / PLAN_NAME).write_text(json.dumps({"settings": settings, "tasks": [t.to_dict() for t in old]}))
    reloaded = load_or_create_plan(tmp_path, cfg, tmp_path / "cache")
    assert reloaded == old and [t.group for t in reloaded] == ["gen/number_parity", "gen/word_sentiment", "gen/plural"]
    assert list(planning.heldout_leaks(reloaded)) == ["gen/word_sentiment"]  # the audit sees the old split
