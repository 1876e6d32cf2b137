"""The translator recipe of issue 18: multi-reference targets, cues per kind, validation tasks by group, early
stopping on validation loss, nested training subsets, several banks at once, and task identification."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from soft2hard.dod import plan as planning
from soft2hard.dod.manifest import Manifest, PromptEntry, TaskEntry, without_leaking_training
from soft2hard.errors import Soft2HardError
from soft2hard.interpret.comparison import add_identification, summarize
from soft2hard.interpret.translator import TranslationExample, TranslatorConfig
from soft2hard.interpret.translator_training import (
    cap_families,
    family_counts,
    prepare_examples,
    repeat_examples,
    subset_tasks,
    task_examples,
    task_family,
    train_translator,
    validation_split,
)
from soft2hard.models import load_model


def entry(name, kind="general", split="train", group=None, reference="Do it.", labels=None, references=None,
          n_prompts=1):
    prompts = tuple(PromptEntry(id=f"{name}@{i}", file="p.safetensors", key=f"{name}@{i}", seed=0, step=i,
                                validation_score=None, best=i == 0) for i in range(n_prompts))
    return TaskEntry(name=name, kind=kind, group=group or name, split=split, reference=reference,
                     reference_source="test", labels=labels, prompts=prompts, references=references)


def test_a_classifier_with_sentence_instructions_trains_both_cues():
    t = entry("comp/category_pair/bird-candy", "classification", labels=("bird", "candy"),
              reference="Say whether the word names a bird or a candy.",
              references=("Say whether the word names a bird or a candy.", "Classify the word as bird or candy."))
    x = torch.zeros(2, 4)
    labels, instruction = task_examples(t, t.prompts[0], x, TranslatorConfig())
    assert (labels.cue, labels.texts) == ("labels", ("bird, candy",))
    assert instruction.cue == "instruction"
    assert instruction.texts == ("Say whether the word names a bird or a candy.", "Classify the word as bird or candy.")
    old_style = entry("cat/fruit-tool", "classification", labels=("fruit", "tool"), reference="fruit, tool")
    assert [ex.cue for ex in task_examples(old_style, old_style.prompts[0], x, TranslatorConfig())] == ["labels"]
    first = task_examples(t, t.prompts[0], x, TranslatorConfig(references="first"))
    assert first[1].texts == ("Say whether the word names a bird or a candy.",)


def test_paraphrases_take_turns_across_epochs():
    ex = TranslationExample(torch.zeros(1, 4), "instruction", "a", "t", ("a", "b", "c"))
    assert ex.texts == ("a", "b", "c")
    assert [ex.target(epoch, 0) for epoch in range(4)] == ["a", "b", "c", "a"]
    assert ex.target(0, 1) == "b"  # neighbours in one epoch see different paraphrases
    assert TranslationExample(torch.zeros(1, 4), "instruction", "a", "t").target(5, 3) == "a"


def test_validation_takes_whole_groups_per_kind_and_is_seeded():
    tasks = [entry(f"g{i}", group=f"group{i // 3}") for i in range(30)]
    tasks += [entry(f"c{i}", "classification", labels=("x", "y")) for i in range(30)]
    tasks += [entry(f"big{i}", group="big") for i in range(40)]
    train, val = validation_split(tasks, 10, seed=0)
    assert {t.name for t in train} | {t.name for t in val} == {t.name for t in tasks}
    assert not {t.group for t in train} & {t.group for t in val}
    assert {t.kind for t in val} == {"general", "classification"}
    assert "big" not in {t.group for t in val}  # a group bigger than half the share is never taken
    assert 8 <= len(val) <= 14
    again = validation_split(tasks, 10, seed=0)[1]
    other = validation_split(tasks, 10, seed=1)[1]
    assert [t.name for t in again] == [t.name for t in val] and [t.name for t in other] != [t.name for t in val]
    assert validation_split(tasks, 0, 0) == (tasks, [])


def test_training_subsets_are_nested():
    tasks = [entry(f"t{i:02d}") for i in range(50)]
    small, large = subset_tasks(tasks, 10, 0), subset_tasks(tasks, 30, 0)
    assert len(small) == 10 and len(large) == 30 and {t.name for t in small} <= {t.name for t in large}
    assert subset_tasks(tasks, 0, 0) == tasks and subset_tasks(tasks, 99, 0) == tasks


def _bank(folder, tasks, d=8):
    folder.mkdir(parents=True)
    gen = torch.Generator().manual_seed(len(str(folder)))
    save_file({p.key: torch.randn(3, d, generator=gen) for t in tasks for p in t.prompts}, str(folder / "p.safetensors"))
    (folder / "manifest.json").write_text(json.dumps({"format": "soft2hard-dod", "version": 1, "model": "m",
                                                      "settings": {}, "tasks": [t.to_dict() for t in tasks]}))
    return folder


def test_banks_combine_and_drop_training_that_leaks_into_the_others_heldout(tmp_path):
    a = _bank(tmp_path / "banks" / "a", [entry("gen/word_sentiment", group="gen/say_whether", split="heldout"),
                                         entry("cat/bird-fish", "classification", "heldout", labels=("bird", "fish"),
                                               reference="bird, fish")])
    b = _bank(tmp_path / "banks" / "sub" / "b", [entry("gen/fruit_or_animal", group="gen/say_whether"),
                                                 entry("comp/z", reference="Say whether it is a bird."),
                                                 entry("comp/w", reference="Add one.", references=("Add one.",
                                                                                                   "Plus 1."))])
    m = Manifest.load_many([a, b])
    assert m.root == (tmp_path / "banks").resolve() and len(m.tasks) == 5
    tensors = {t.name: x for t, _, x in m.iter_prompts()}
    assert torch.equal(tensors["comp/w"], load_file(str(b / "p.safetensors"))["comp/w@0"])
    assert set(m.heldout_leaks()) == {"gen/word_sentiment", "cat/bird-fish"}  # each bank alone looked clean
    kept, dropped = without_leaking_training(m)
    assert set(dropped) == {"gen/fruit_or_animal", "comp/z"}
    assert "group 'gen/say_whether'" in dropped["gen/fruit_or_animal"]
    assert "'bird'" in dropped["comp/z"]
    assert kept.heldout_leaks() == {} and [t.name for t in kept.split("train")] == ["comp/w"]
    # what a translator trained on decides what is clean
    assert set(m.heldout_leaks(trained_on=["comp/w"])) == set()
    assert set(m.heldout_leaks(trained_on=["gen/fruit_or_animal"])) == {"gen/word_sentiment"}
    # a paraphrase counts as a target text too
    assert planning.leaking_train_tasks([*a_tasks(m), entry("comp/v", reference="Add one.",
                                                            references=("Add one.", "Is it a fish?"))]) == {
        "comp/v": "mentions the held-out label 'fish'"}
    with pytest.raises(Soft2HardError, match="in both"):
        Manifest.load_many([a, a])


def a_tasks(m):
    return [t for t in m.tasks if t.split == "heldout"]


def test_banks_of_different_models_do_not_combine(tmp_path):
    a = _bank(tmp_path / "a", [entry("t1")])
    b = _bank(tmp_path / "b", [entry("t2")])
    data = json.loads((b / "manifest.json").read_text())
    (b / "manifest.json").write_text(json.dumps({**data, "model": "other"}))
    with pytest.raises(Soft2HardError, match="different models"):
        Manifest.load_many([a, b])


def test_prepare_examples_keeps_validation_tasks_out_of_training(tmp_path):
    tasks = [entry(f"t{i}", group=f"g{i}") for i in range(20)]
    m = Manifest.load(_bank(tmp_path / "bank", tasks))
    train, val = prepare_examples(m, TranslatorConfig(validation_tasks=4, max_train_tasks=10))
    assert len({ex.task for ex in val}) == 4 and len({ex.task for ex in train}) == 10
    assert not {ex.task for ex in train} & {ex.task for ex in val}


def test_families_are_capped_by_a_seeded_choice_and_small_ones_repeated(tmp_path):
    names = ("comp/category_pair/bird-candy", "bigbench/snarks", "bigbench/arithmetic/3_digit", "cat/a-b", "comp/x")
    assert [task_family(n) for n in names] == [
        "comp/category_pair", "bigbench/snarks", "bigbench/arithmetic", "cat", "comp"]
    tasks = [entry(f"comp/category_pair/p{i:02d}") for i in range(12)] + [entry(f"bigbench/b{i}") for i in range(3)]
    capped = cap_families(tasks, 5, 0)
    names = [t.name for t in capped]
    assert sum(n.startswith("comp/") for n in names) == 5 and sum(n.startswith("bigbench/") for n in names) == 3
    assert names == [t.name for t in cap_families(tasks, 5, 0)] and names != [t.name for t in cap_families(tasks, 5, 1)]
    assert cap_families(tasks, 0, 0) == tasks
    m = Manifest.load(_bank(tmp_path / "bank", tasks))
    train, _ = prepare_examples(m, TranslatorConfig(max_tasks_per_family=5, repeat="bigbench=3"))
    assert family_counts(train) == {"bigbench/b0": 1, "bigbench/b1": 1, "bigbench/b2": 1, "comp/category_pair": 5}
    counts = {f: sum(ex.task.startswith(f) for ex in train) for f in ("bigbench/", "comp/category_pair/")}
    assert counts == {"bigbench/": 9, "comp/category_pair/": 5}  # "bigbench" names every BIG-bench parent
    once, _ = prepare_examples(m, TranslatorConfig(max_tasks_per_family=5))
    assert len(once) == 8
    specific = repeat_examples(once, "bigbench=3,bigbench/b1=1")
    assert sum(ex.task == "bigbench/b1" for ex in specific) == 1 and sum(ex.task == "bigbench/b0" for ex in specific) == 3
    assert repeat_examples(once, "") == once
    with pytest.raises(Soft2HardError, match="no training example: ni"):
        repeat_examples(train, "ni=2")
    for bad in ("bigbench", "bigbench=0", "=2", "bigbench=x"):
        with pytest.raises(Soft2HardError, match="FAMILY=COUNT"):
            TranslatorConfig(repeat=bad)


def _random_examples(lm, n, seed):
    gen = torch.Generator().manual_seed(seed)
    scale = float(lm.vocab_embeddings().float().std())
    words = ["plural", "fruit", "number", "reverse", "letter", "colour"]
    return [TranslationExample(torch.randn(3, lm.d_model, generator=gen) * scale, "instruction",
                               f"Give the {words[i % 6]}.", f"task{i}", (f"Write the {words[i % 6]}.",))
            for i in range(n)]


def test_validation_picks_the_checkpoint_and_stops_early(tmp_path, tiny_llama_dir):
    lm = load_model(str(tiny_llama_dir), device="cpu")
    train, val = _random_examples(lm, 6, 0), _random_examples(lm, 2, 1)
    cfg = TranslatorConfig(epochs=30, batch_size=3, lr=3e-2, lora_r=2, lora_alpha=4, warmup_steps=1,
                           save_every=1000, eval_every=2, patience=2)
    tr = train_translator(lm, train, cfg, tmp_path / "t", progress=False, validation=val)
    history = tr.meta["validation"]
    best = min(history, key=lambda v: v["loss"])
    assert tr.meta["best_step"] == best["step"]
    assert tr.meta["validation_tasks"] == ["task0", "task1"] and set(tr.meta["training_tasks"]) >= {"task5"}
    assert tr.meta["stopped_early"]  # the loss on unseen prompts soon stops improving: `patience` passes later
    assert history[-1]["step"] - best["step"] == cfg.eval_every * cfg.patience
    assert tr.meta["steps"] == history[-1]["step"] < tr.meta["planned_steps"]
    published = load_file(str(tmp_path / "t" / "adapter_model.safetensors"))
    at_best = load_file(str(tmp_path / "t" / "checkpoints" / f"step_{best['step']:06d}" / "adapter" /
                            "adapter_model.safetensors"))
    assert all(torch.equal(published[k], at_best[k].to(published[k].dtype)) for k in published)


def test_training_with_validation_resumes_exactly(tmp_path, tiny_llama_dir):
    def run(out, **kw):
        lm = load_model(str(tiny_llama_dir), device="cpu")
        cfg = TranslatorConfig(epochs=4, batch_size=3, lr=1e-2, lora_r=2, lora_alpha=4, warmup_steps=1,
                               save_every=1000, eval_every=2)
        return train_translator(lm, _random_examples(lm, 6, 0), cfg, out, progress=False,
                                validation=_random_examples(lm, 2, 1), **kw)

    whole = run(tmp_path / "whole")
    assert run(tmp_path / "cut", stop_after=3) is None
    cut = run(tmp_path / "cut", resume=True)
    assert cut.meta["validation"] == whole.meta["validation"]
    a = load_file(str(tmp_path / "whole" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "cut" / "adapter_model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_task_identification_ranks_the_own_reference(monkeypatch):
    import soft2hard.interpret.comparison as comparison

    # a fake similarity: the number of words a text shares with a reference
    def overlap(texts, refs):
        return [[len(set(t.split()) & set(r.split())) for r in refs] for t in texts]

    monkeypatch.setattr(comparison, "similarity_matrix", overlap)
    rows = [{"task": "a", "kind": "general", "method": "translator", "text": "add one", "reference": "add one to it"},
            {"task": "b", "kind": "general", "method": "translator", "text": "sort list", "reference": "sort the list"},
            {"task": "c", "kind": "general", "method": "translator", "text": "add one", "reference": "reverse the word"}]
    add_identification(rows)
    assert [r["id_rank"] for r in rows] == [1, 1, 3]  # c's text is nearer to a's reference; a tie counts against
    stats = summarize(rows)["general"]["translator"]
    assert stats["id@1"] == pytest.approx(2 / 3, abs=1e-4) and stats["id@5"] == 1.0


def test_results_keep_compositional_and_sentence_level_tasks_apart():
    from soft2hard.interpret.comparison import bucket

    assert bucket(entry("bigbench/tense")) == "general" and bucket(entry("cat/a-b", "classification")) == "classification"
    assert bucket(entry("comp/affix/bang")) == "general:comp"
    assert bucket(entry("comp/category_pair/bird-candy", "classification")) == "classification:comp"
    assert bucket(entry("comp/sentence_topic/bird-dinosaur", "classification")) == "classification:sentence"
    assert bucket(entry("cat/reptile-dog_breed", "classification")) == "classification:large"
    assert bucket(entry("cat/fruit-tool", "classification")) == "classification"


def test_quality_validation_picks_the_best_decoded_checkpoint(tmp_path, tiny_llama_dir):
    from soft2hard.interpret.translator_training import best_validation, validation_quality

    lm = load_model(str(tiny_llama_dir), device="cpu")
    train, val = _random_examples(lm, 6, 0), _random_examples(lm, 2, 1)
    val.append(TranslationExample(val[0].prompt, "labels", "fruit, tool", "task1"))
    cfg = TranslatorConfig(epochs=3, batch_size=3, lr=3e-2, lora_r=2, lora_alpha=4, warmup_steps=1,
                           save_every=1000, eval_every=2, validation_metric="quality")
    tr = train_translator(lm, train, cfg, tmp_path / "t", progress=False, validation=val)
    history = tr.meta["validation"]
    assert all(0.0 <= v["quality"] <= 1.0 and v["loss"] > 0 for v in history)
    assert tr.meta["best_step"] == best_validation(history, "quality")["step"]
    assert best_validation([{"step": 2, "loss": 1.0, "quality": 0.2}, {"step": 4, "loss": 2.0, "quality": 0.5},
                            {"step": 6, "loss": 0.5, "quality": 0.5}], "quality")["step"] == 4
    assert best_validation([{"step": 2, "loss": 1.0}, {"step": 4, "loss": 0.5}], "loss")["step"] == 4
    assert 0.0 <= validation_quality(tr.lm, val, max_new_tokens=4) <= 1.0
    with pytest.raises(Soft2HardError, match="validation_metric"):
        TranslatorConfig(validation_metric="bleu")


def test_the_family_cap_can_spare_classification_tasks(tmp_path):
    general = [entry(f"comp/count_letter/c{i:02d}") for i in range(8)]
    labelled = [entry(f"comp/category_pair/p{i:02d}", kind="classification", labels=["bird", "candy"])
                for i in range(8)]
    tasks = general + labelled
    capped = [t.name for t in cap_families(tasks, 3, 0, kinds="general")]
    assert sum(n.startswith("comp/count_letter/") for n in capped) == 3
    assert [n for n in capped if n.startswith("comp/category_pair/")] == [t.name for t in labelled]
    assert len(cap_families(tasks, 3, 0)) == 6  # no kinds: every family capped
    m = Manifest.load(_bank(tmp_path / "bank", tasks))
    train, _ = prepare_examples(m, TranslatorConfig(max_tasks_per_family=3, cap_kinds="general"))
    assert family_counts(train) == {"comp/count_letter": 3, "comp/category_pair": 8}
    with pytest.raises(Soft2HardError, match="not a task kind"):
        TranslatorConfig(cap_kinds="general,sentences")
