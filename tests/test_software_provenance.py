"""Every artefact records the software that wrote it (issue 20, item 7): soft2hard's version and git commit and
the torch/transformers/peft versions; the record never decides a resume, a cache key or a bit-identity check."""

from __future__ import annotations

import importlib.metadata
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from soft2hard import atomic
from soft2hard import provenance as prov
from soft2hard.dod.bank import pack
from soft2hard.dod.manifest import Manifest
from soft2hard.evaluation import EvalConfig, LazyTarget, evaluate
from soft2hard.evaluation.items import bare
from soft2hard.interpret.selection import SHIPPED_PROFILES, Profile
from soft2hard.interpret.translator import TRANSLATOR_META
from soft2hard.tasks import get_task
from soft2hard.tuning import TuningConfig, tune

ROOT = Path(__file__).resolve().parents[1]
KEYS = {"soft2hard", "git_commit", "torch", "transformers", "peft"}


def test_provenance_names_the_versions_and_the_commit():
    record = prov.provenance()
    assert set(record) == KEYS
    for name in ("soft2hard", "torch", "transformers", "peft"):
        assert record[name] == importlib.metadata.version(name)
    record["torch"] = "changed"  # each call is a fresh copy
    assert prov.provenance()["torch"] == importlib.metadata.version("torch")
    if shutil.which("git") and (ROOT / ".git").exists():
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        assert record["git_commit"] == head


def test_git_commit_is_none_outside_a_checkout_and_without_git(tmp_path, monkeypatch):
    assert prov.git_commit(tmp_path) is None  # not a repository
    assert prov.git_commit(tmp_path / "missing") is None  # not even a folder
    repo = tmp_path / "repo"
    (repo / "pkg").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    assert prov.git_commit(repo / "pkg") is None  # inside a repository, but nothing here is tracked
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no git at all
    assert prov.git_commit(prov.SOURCE) is None
    assert prov.package_version("surely-not-installed-soft2hard-x") is None


def test_profile_records_it_and_still_loads(tmp_path):
    shipped = Profile.load(SHIPPED_PROFILES / "smollm2-135m.json")  # written before: no record, loads
    assert shipped.provenance == {}
    shipped.save(tmp_path / "p.json")
    stored = atomic.read_json(tmp_path / "p.json")
    assert stored["provenance"] == prov.provenance()
    again = Profile.load(tmp_path / "p.json")
    assert again.provenance == prov.provenance() and again.pairs == shipped.pairs


def test_translator_and_bank_record_it(tiny_translator, tiny_dod, tmp_path):
    assert atomic.read_json(tiny_translator / TRANSLATOR_META)["provenance"] == prov.provenance()
    packed = pack(Manifest.load(tiny_dod), tmp_path / "bank")
    assert packed.settings["provenance"] == prov.provenance()
    assert Manifest.load(tmp_path / "bank").settings["provenance"] == prov.provenance()


def test_run_folder_records_it_in_metrics_not_in_the_compared_config(tiny_llama, tmp_path, monkeypatch):
    task = get_task("gen/plural")
    cfg = TuningConfig(n_tokens=2, steps=2, eval_every=1, batch_size=2, max_eval_examples=2, max_test_examples=2)
    tune(tiny_llama, task, cfg, tmp_path / "run", progress=False)
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["provenance"] == prov.provenance()
    assert "provenance" not in json.loads((tmp_path / "run" / "config.json").read_text())
    monkeypatch.setattr(prov, "_provenance", lambda: {"soft2hard": "9.9", "git_commit": None})
    tune(tiny_llama, task, cfg, tmp_path / "run", resume=True, progress=False)  # a newer version resumes
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["provenance"]["soft2hard"] == "9.9"


class EchoTarget:
    name = "echo"

    def __init__(self) -> None:
        self.calls = 0

    def complete(self, prompts, max_tokens, stop):
        self.calls += 1
        return ["cats" for _ in prompts]


def test_evaluation_records_it_in_the_summary_and_resumes_under_another(tmp_path, monkeypatch):
    items = bare(["gen/plural"], tmp_path / "cache")
    cfg = EvalConfig(conditions=("zero_shot",), max_examples=2)
    echo = EchoTarget()
    evaluate(items, None, "m", [LazyTarget("echo", lambda: echo)], cfg, tmp_path / "e", progress=False)
    summary = atomic.read_json(tmp_path / "e" / "summary.json")
    assert summary["provenance"] == prov.provenance() and echo.calls == 1
    settings = (tmp_path / "e" / "settings.json").read_bytes()
    assert b"provenance" not in settings and b"git_commit" not in settings
    monkeypatch.setattr(prov, "_provenance", lambda: {"soft2hard": "9.9", "git_commit": None})
    evaluate(items, None, "m", [LazyTarget("echo", lambda: pytest.fail("a finished cell was recomputed"))], cfg,
             tmp_path / "e", progress=False)  # another version: the folder still resumes
    assert atomic.read_json(tmp_path / "e" / "summary.json")["provenance"]["soft2hard"] == "9.9"
    assert (tmp_path / "e" / "settings.json").read_bytes() == settings
