"""Sharded DoD banks: a growing build packed as append-only shards, resumed on an empty runs/ from the bank;
compositional plans and per-job tuning recipes."""

from __future__ import annotations

import collections
import hashlib
import shutil

import pytest
import torch

from soft2hard import atomic
from soft2hard.dod import bank as banks
from soft2hard.dod import plan as planning
from soft2hard.dod.build import build, finished_job_entries, is_finished
from soft2hard.dod.config import BuildConfig, load_build
from soft2hard.dod.manifest import Manifest
from soft2hard.errors import Soft2HardError
from soft2hard.prompts import _read_safetensors

COMP = ("comp/arith/add-7", "comp/word_rule/vowels", "comp/word_test/starts-s-yes")
TUNING = {"n_tokens": 4, "steps": 4, "eval_every": 2, "lr": 3e-2, "batch_size": 4, "max_eval_examples": 4,
          "max_test_examples": 4, "init": "vocab"}


def _cfg(model_dir, **kw) -> BuildConfig:
    return BuildConfig(model=str(model_dir), tasks=COMP, general_heldout=1, amp="none", tuning=TUNING, seeds=(0, 1),
                       recipes=({}, {"n_tokens": 3, "init": "random"}), **kw)


def _append(out, bank):
    cfg, planned = load_build(out)
    return banks.append_shard(out, bank, finished_job_entries(out, cfg, planned))


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _prompts(manifest: Manifest) -> dict:
    return {e.id: t for _, e, t in manifest.iter_prompts()}


@pytest.fixture(scope="module")
def grown(tmp_path_factory, tiny_llama_dir, cache_dir):
    """A build packed into a bank twice (after 2 jobs, then after all), and the shards' digests in between."""
    root = tmp_path_factory.mktemp("grown")
    out, bank = root / "build", root / "bank"
    build(out, _cfg(tiny_llama_dir), cache_dir, workers=0, progress=False, max_jobs=2, pack=2)
    first = _append(out, bank)
    before = _digest(first), _digest(first.with_suffix(".safetensors"))
    full = build(out, _cfg(tiny_llama_dir), cache_dir, workers=0, progress=False, pack=2)
    second = _append(out, bank)
    return out, bank, full, first, second, before


def test_shards_are_append_only_and_hold_each_job_once(grown):
    out, bank, full, first, second, before = grown
    assert (_digest(first), _digest(first.with_suffix(".safetensors"))) == before  # never rewritten
    jobs = [(j["task"]["name"], j["seed"]) for f in (first, second) for j in banks._read_shard(f)]
    assert len(jobs) == len(set(jobs)) == 5  # 2 training tasks x 2 seeds + 1 held-out task x 1 seed
    assert len(banks._read_shard(first)) == 2
    assert _append(out, bank) is None  # nothing new: no empty shard
    from soft2hard.provenance import provenance

    assert atomic.read_json(first)["provenance"] == provenance()  # each shard records the software that wrote it


def test_a_best_only_shard_keeps_each_jobs_best_checkpoint(grown, tmp_path):
    out, _, full, *_ = grown
    cfg, planned = load_build(out)
    shard = banks.append_shard(out, tmp_path / "b", finished_job_entries(out, cfg, planned), best_only=True)
    jobs = banks._read_shard(shard)
    assert len(jobs) == 5 and all(len(j["task"]["prompts"]) == 1 and j["task"]["prompts"][0]["best"] for j in jobs)
    everything = banks.append_shard(out, tmp_path / "all", finished_job_entries(out, cfg, planned))
    assert sum(len(j["task"]["prompts"]) for j in banks._read_shard(everything)) > len(jobs)  # 2 checkpoints a job


def test_sharded_bank_loads_as_the_builds_manifest_in_fp16(grown):
    _, bank, full, *_ = grown
    loaded = Manifest.load(bank)
    assert {t.name for t in loaded.tasks} == {t.name for t in full.tasks}
    want, got = _prompts(full), _prompts(loaded)
    assert want.keys() == got.keys()
    for key, tensor in want.items():
        assert torch.equal(got[key], tensor.to(torch.float16).float())
    by_name = {t.name: t for t in loaded.tasks}
    for t in full.tasks:
        assert by_name[t.name].references == t.references and len(t.references) >= 3
        assert by_name[t.name].test_score == pytest.approx(t.test_score)


def test_recipes_vary_by_job_and_prompt_lengths(grown):
    _, _, full, *_ = grown
    cfg, _ = load_build(grown[0])
    lengths = collections.Counter(t.shape[0] for t in _prompts(full).values())
    assert set(lengths) == {3, 4}
    for task in full.tasks:
        for p in task.prompts:
            assert _prompts(full)[p.id].shape[0] == cfg.tuning_config(p.seed, task.name).n_tokens


def test_build_resumes_from_the_bank_on_an_empty_runs_folder(grown, tmp_path, tiny_llama_dir, cache_dir):
    out, bank, full, first, *_ = grown
    fresh = tmp_path / "fresh"  # a new machine: only the committed bank
    m = build(fresh, _cfg(tiny_llama_dir), cache_dir, workers=0, progress=False, pack=2, bank=bank)
    assert (fresh / "plan.json").read_bytes() == (bank / "plan.json").read_bytes()
    assert not (fresh / "runs").exists() and m.tasks == []  # every job was in the bank: nothing retrained
    partial = tmp_path / "partial"  # a bank with the first shard only: the rest is trained, the banked jobs not
    (partial / "bank" / banks.SHARD_DIR).mkdir(parents=True)
    shutil.copy(bank / "plan.json", partial / "bank" / "plan.json")
    for f in (first, first.with_suffix(".safetensors")):
        shutil.copy(f, partial / "bank" / banks.SHARD_DIR / f.name)
    cfg = _cfg(tiny_llama_dir)
    build(partial / "out", cfg, cache_dir, workers=0, progress=False, pack=2, bank=partial / "bank")
    banked = banks.banked_jobs(partial / "bank")
    _, planned = load_build(partial / "out")
    for t in planned:
        for seed in (0, 1) if t.split == "train" else (0,):
            assert is_finished(partial / "out", t.name, seed) == ((t.name, seed) not in banked)
    _append(partial / "out", partial / "bank")
    again = _prompts(Manifest.load(partial / "bank"))
    assert again.keys() == _prompts(Manifest.load(bank)).keys()


def test_a_bank_refuses_another_builds_shards(grown, tmp_path, tiny_llama_dir, cache_dir):
    _, bank, *_ = grown
    other = tmp_path / "other"
    build(other, _cfg(tiny_llama_dir, split_seed=1), cache_dir, workers=0, progress=False, max_jobs=1, pack=2)
    with pytest.raises(Soft2HardError, match="another build's plan"):
        _append(other, bank)


def test_int8_prompts_round_trip_within_half_a_step_per_token_row():
    x = torch.randn(5, 64) * torch.tensor([0.01, 0.1, 1.0, 10.0, 100.0])[:, None]  # rows of very different norms
    stored = banks.encode_prompt("p", x, "int8")
    assert stored["p"].dtype == torch.int8 and stored["p.scale"].shape == (5, 1)
    back = banks.decode_prompt(stored, "p")
    step = x.abs().amax(dim=1, keepdim=True) / 127
    assert ((back - x).abs() <= step / 2 + 1e-6 * step).all()
    assert torch.equal(banks.decode_prompt(banks.encode_prompt("p", x, "float16"), "p"), x.half().float())
    with pytest.raises(Soft2HardError, match="no \\[n, 1\\] scale"):
        banks.decode_prompt({"p": stored["p"]}, "p")
    with pytest.raises(Soft2HardError, match="not one of"):
        banks.encode_prompt("p", x, "int4")


def test_an_int8_copy_of_a_bank_keeps_its_jobs_and_grows_like_it(grown, tmp_path, tiny_llama_dir, cache_dir):
    out, bank, full, first, *_ = grown
    small = tmp_path / "int8"
    written = banks.reencode_bank(bank, small, "int8")
    assert [f.name for f in written] == [f.name for f in banks._shard_files(bank)]
    assert banks.banked_jobs(small) == banks.banked_jobs(bank)
    assert banks.reencode_bank(bank, small, "int8") == []  # resumable: finished shards are not rewritten
    loaded = Manifest.load(small)
    assert loaded.settings["dtype"] == "int8" and Manifest.load(bank).settings["dtype"] == "float16"
    want, got = _prompts(Manifest.load(bank)), _prompts(loaded)
    assert want.keys() == got.keys()
    for key, tensor in want.items():
        assert (got[key] - tensor).abs().max() <= tensor.abs().max() / 127
        assert torch.nn.functional.cosine_similarity(got[key].flatten(), tensor.flatten(), dim=0) > 0.999
    def payload(b):  # tensor bytes (the tiny model's prompts are too small for file sizes to show it)
        return sum(t.numel() * t.element_size() for f in (b / banks.SHARD_DIR).glob("*.safetensors")
                   for t in _read_safetensors(f).values())

    assert payload(small) < 0.6 * payload(bank)
    best = banks.reencode_bank(bank, tmp_path / "best", "int8", best_only=True)
    assert all(len(j["task"]["prompts"]) == 1 for f in best for j in banks._read_shard(f))
    # the copy is a bank like the original: a build on an empty runs/ resumes from it and appends shards to it
    partial = tmp_path / "partial"
    (partial / banks.SHARD_DIR).mkdir(parents=True)
    shutil.copy(small / "plan.json", partial / "plan.json")
    for f in (small / banks.SHARD_DIR / first.name, (small / banks.SHARD_DIR / first.name).with_suffix(".safetensors")):
        shutil.copy(f, partial / banks.SHARD_DIR / f.name)
    build(tmp_path / "out", _cfg(tiny_llama_dir), cache_dir, workers=0, progress=False, pack=2, bank=partial)
    cfg, planned = load_build(tmp_path / "out")
    banks.append_shard(tmp_path / "out", partial, finished_job_entries(tmp_path / "out", cfg, planned),
                       encoding="int8")
    assert banks.banked_jobs(partial) == banks.banked_jobs(bank)
    assert Manifest.load(partial).settings["dtype"] == "int8"


def test_a_mixed_copy_keeps_the_best_checkpoints_exact_and_stores_the_others_in_int8(grown, tmp_path):
    _, bank, *_ = grown
    mixed = tmp_path / "mixed"
    banks.reencode_bank(bank, mixed, "mixed")
    original = Manifest.load(bank)
    want, got = _prompts(original), _prompts(Manifest.load(mixed))
    best = {e.id for t in original.tasks for e in t.prompts if e.best}
    assert best and len(best) < len(want)
    stored = {k: v for f in (mixed / banks.SHARD_DIR).glob("*.safetensors") for k, v in _read_safetensors(f).items()}
    for key, tensor in want.items():
        if key in best:  # what evaluations read: unchanged, so recorded figures re-measure identically
            assert stored[key].dtype == torch.float16 and torch.equal(got[key], tensor)
        else:
            assert stored[key].dtype == torch.int8 and (got[key] - tensor).abs().max() <= tensor.abs().max() / 127
    assert Manifest.load(mixed).settings["dtype"] == "mixed"
    with pytest.raises(Soft2HardError, match="float16 or int8"):
        banks.encode_prompt("p", torch.ones(2, 3), "mixed")


def test_dod_pack_re_encodes_a_sharded_bank_from_the_command_line(grown, tmp_path):
    import subprocess
    import sys

    _, bank, *_ = grown
    cmd = [sys.executable, "-m", "soft2hard.cli", "dod", "pack", str(bank), "--out", str(tmp_path / "m")]
    proc = subprocess.run(cmd + ["--encoding", "mixed"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "2 shard(s) written" in proc.stdout and "mixed" in proc.stdout
    proc = subprocess.run(cmd + ["--encoding", "int4"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "invalid choice" in proc.stderr


def test_a_re_encoding_refuses_the_bank_itself_and_a_build_folder(grown):
    out, bank, *_ = grown
    with pytest.raises(Soft2HardError, match="not the bank itself"):
        banks.reencode_bank(bank, bank, "int8")
    with pytest.raises(Soft2HardError, match="not a sharded bank"):
        banks.reencode_bank(out, bank.parent / "x", "int8")


def test_compositional_plan_splits_by_family_and_category():
    planned = planning.plan_compositional(seed=0)
    held = {t.group for t in planned if t.split == "heldout"}
    train = {t.group for t in planned if t.split == "train"}
    assert not held & train and len(planned) >= 900
    assert all(t.references and t.references[0] == t.reference for t in planned)
    _, held_categories = planning.heldout_category_pool(0)
    from soft2hard.tasks import compositional

    for t in planned:
        cats = set(compositional.categories_of(t.name))
        if cats:
            assert cats <= set(held_categories) if t.split == "heldout" else not cats & set(held_categories)
    combined = planning.drop_leaking_train_tasks(planned + planning.plan_classification(seed=0))
    assert planning.heldout_leaks(combined) == {}
    assert planning.heldout_label_leaks(combined) == []
