"""BIG-bench extraction and conversion, on a small fake sdist with the real member layout (no network).

The one ``slow`` test downloads the real sdist (~342 MiB) unless the user cache (``SOFT2HARD_CACHE`` or
~/.cache/soft2hard) already holds it.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest

from soft2hard.errors import Soft2HardError
from soft2hard.tasks import bigbench, get_task, list_tasks
from soft2hard.tasks.bigbench import convert_examples, describe, ensure_bigbench

ROOT = "bigbench-1.0.0/bigbench/benchmark_tasks/"


def _gen_examples(n: int) -> list[dict]:
    out = [{"input": f"word{i} ", "target": f"words{i}"} for i in range(n)]
    out[1]["target"] = ["words1", "other"]
    out.append({"input": "", "target": "skipped: empty input"})
    out.append({"input": "skipped: empty target", "target": ""})
    return out


PLAIN = {"name": "plural_like", "description": "Pluralize the word", "examples": _gen_examples(12)}
PARENT = {"name": "family", "description": "A family of mapping tasks", "keywords": ["x"]}
SUB_A = {"name": "sub_a", "description": "", "task_prefix": "Map each word.\n", "examples": _gen_examples(10)}
SUB_B = {"name": "sub_b", "description": "Second subtask", "examples": _gen_examples(11)}
CHOICES = {"yes": 0, "no": 0, "maybe": 0}
MC = {
    "name": "mc_task",
    "description": "Answer yes, no or maybe",
    "task_prefix": "Answer yes, no or maybe",
    "examples": [{"input": f"question {i}?", "target_scores": {**CHOICES, ["yes", "no", "maybe"][i % 3]: 1}}
                 for i in range(15)],
}
MIXED = {
    "name": "mixed_choices",
    "description": "Pick the best option",
    "examples": [{"input": f"q{i}", "target_scores": {f"a{i}": 1, f"b{i}": 0}} for i in range(10)],
}
TINY = {"name": "tiny", "description": "Too small", "examples": _gen_examples(5)}

FAKE_MEMBERS = [
    ("bigbench-1.0.0/setup.py", b"print('not a task')\n"),
    (ROOT + "family/sub_a/task.json", SUB_A),  # before its parent, as tar order is arbitrary
    (ROOT + "plural_like/task.json", PLAIN),
    (ROOT + "plural_like/README.md", b"# readme\n"),
    (ROOT + "family/task.json", PARENT),
    (ROOT + "family/sub_b/task.json", SUB_B),
    (ROOT + "family/sub_b/deeper/task.json", TINY),  # too deep: not a task
    (ROOT + "mc_task/task.json", MC),
    (ROOT + "mixed_choices/task.json", MIXED),
    (ROOT + "tiny/task.json", TINY),
]


def build_sdist(path: Path, members: list[tuple[str, object]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, content in members:
            data = content if isinstance(content, bytes) else json.dumps(content).encode("utf-8")
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def fake_sdist(tmp_path: Path) -> Path:
    return build_sdist(tmp_path / "bigbench-1.0.0.tar.gz", FAKE_MEMBERS)


def test_extraction_layout_and_index(tmp_path: Path, fake_sdist: Path) -> None:
    cache = tmp_path / "cache"
    index = ensure_bigbench(cache, sdist_path=fake_sdist)
    tasks_dir = cache / "bigbench" / "tasks"
    extracted = sorted(str(p.relative_to(tasks_dir)) for p in tasks_dir.rglob("*") if p.is_file())
    assert extracted == ["family/sub_a/task.json", "family/sub_b/task.json", "family/task.json",
                         "mc_task/task.json", "mixed_choices/task.json", "plural_like/task.json", "tiny/task.json"]
    by_name = {e["name"]: e for e in index["tasks"]}
    assert sorted(by_name) == ["bigbench/family/sub_a", "bigbench/family/sub_b", "bigbench/mc_task",
                               "bigbench/mixed_choices", "bigbench/plural_like"]
    assert "bigbench/tiny" in index["excluded"] and "bigbench/family" in index["excluded"]
    assert by_name["bigbench/plural_like"]["n_examples"] == 12
    assert by_name["bigbench/mc_task"]["kind"] == "classification"
    assert by_name["bigbench/mixed_choices"]["kind"] == "generation"
    assert not list(cache.rglob("*.tmp")), "no temporary files are left behind"


def test_conversion_and_descriptions(tmp_path: Path, fake_sdist: Path) -> None:
    cache = tmp_path / "cache"
    ensure_bigbench(cache, sdist_path=fake_sdist)
    plain = get_task("bigbench/plural_like", cache_dir=cache)
    assert plain.answer_type == "generation" and plain.source == "bigbench"
    assert plain.examples[0].input == "word0" and plain.examples[1].target == "words1"
    assert (plain.description, plain.description_source) == ("Pluralize the word.", "description")

    sub_a = get_task("bigbench/family/sub_a", cache_dir=cache)
    assert sub_a.description == "A family of mapping tasks. Map each word."
    assert sub_a.description_source == "parent_description+task_prefix"
    sub_b = get_task("bigbench/family/sub_b", cache_dir=cache)
    assert (sub_b.description, sub_b.description_source) == ("Second subtask.", "description")

    mc = get_task("bigbench/mc_task", cache_dir=cache)
    assert mc.labels == ("yes", "no", "maybe")
    assert [ex.target for ex in mc.examples[:3]] == ["yes", "no", "maybe"]
    assert mc.description_source == "description"  # the prefix only repeats the description
    mixed = get_task("bigbench/mixed_choices", cache_dir=cache)
    assert mixed.labels is None and mixed.examples[3].target == "a3"
    assert len(mc.splits().test) == 3


def test_convert_examples_rules() -> None:
    many = {str(i): 0 for i in range(13)}
    examples, labels = convert_examples({"examples": [{"input": "x", "target_scores": {**many, "7": 1}}] * 2})
    assert labels is None and examples[0].target == "7"  # more than 12 choices: generation
    examples, labels = convert_examples({"examples": [{"input": "x", "target": [], "target_scores": {"a": 0}}]})
    assert labels is None and examples[0].target == "a"
    assert convert_examples({"examples": "nope"}) == ([], None)
    assert describe("", "", "") == ("", "")
    assert describe("Add", "Add two numbers:", "") == ("Add two numbers:", "task_prefix")


def test_extraction_is_idempotent(tmp_path: Path, fake_sdist: Path) -> None:
    cache = tmp_path / "cache"
    first = ensure_bigbench(cache, sdist_path=fake_sdist)
    marker = cache / "bigbench" / "index.json"
    mtime = marker.stat().st_mtime_ns
    # already extracted: the archive is not read again
    assert ensure_bigbench(cache, sdist_path=tmp_path / "missing.tar.gz") == first
    assert marker.stat().st_mtime_ns == mtime
    # a half-finished extraction (no index) is redone from scratch
    marker.unlink()
    stray = cache / "bigbench" / "tasks" / "stale" / "task.json"
    stray.parent.mkdir(parents=True)
    stray.write_text("{}")
    (cache / "bigbench" / "tasks" / "plural_like" / "task.json").write_text("{trunc")
    assert ensure_bigbench(cache, sdist_path=fake_sdist) == first
    assert not stray.exists()
    assert len(get_task("bigbench/plural_like", cache_dir=cache).examples) == 12


def test_rejects_members_outside_the_cache(tmp_path: Path) -> None:
    evil = build_sdist(tmp_path / "evil.tar.gz", [(ROOT + "plural_like/task.json", PLAIN),
                                                  (ROOT + "../../../../escaped/task.json", PLAIN)])
    cache = tmp_path / "cache"
    with pytest.raises(Soft2HardError, match="unsafe archive member"):
        ensure_bigbench(cache, sdist_path=evil)
    assert not (cache / "bigbench" / "index.json").exists()
    assert not list(tmp_path.rglob("escaped"))
    absolute = build_sdist(tmp_path / "abs.tar.gz", [("/" + ROOT + "x/task.json", PLAIN)])
    with pytest.raises(Soft2HardError, match="unsafe"):
        ensure_bigbench(cache, sdist_path=absolute)


def test_unreadable_archive(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"not a tarball")
    with pytest.raises(Soft2HardError, match="bad.tar.gz"):
        ensure_bigbench(tmp_path / "cache", sdist_path=bad)


def test_registry_downloads_on_first_bigbench_listing(tmp_path: Path, fake_sdist: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Path] = []

    def fake_download(cache_dir: Path) -> Path:
        calls.append(cache_dir)
        return fake_sdist

    monkeypatch.setattr(bigbench, "download_sdist", fake_download)
    cache = tmp_path / "cache"
    assert all(s["source"] == "generated" for s in list_tasks(cache_dir=cache))
    assert calls == []
    listed = list_tasks("bigbench", cache_dir=cache)
    assert calls == [cache]
    assert {s["source"] for s in listed} == {"bigbench"}
    for summary in listed:
        task = get_task(summary["name"], cache_dir=cache)
        assert (task.answer_type, len(task.examples)) == (summary["answer_type"], summary["n_examples"])
    everything = [s["name"] for s in list_tasks(cache_dir=cache)]
    assert "gen/first_letter" in everything and "bigbench/mc_task" in everything
    assert calls == [cache]

    with pytest.raises(Soft2HardError, match="did you mean 'bigbench/mc_task'"):
        get_task("bigbench/mc_tsk", cache_dir=cache)
    with pytest.raises(Soft2HardError, match="group of 2 BIG-bench subtasks"):
        get_task("bigbench/family", cache_dir=cache)
    with pytest.raises(Soft2HardError, match="fewer than 10"):
        get_task("bigbench/tiny", cache_dir=cache)
    with pytest.raises(Soft2HardError, match="did you mean 'bigbench/plural_like'"):
        get_task("plural_lke", cache_dir=cache)


def test_download_is_skipped_when_sdist_is_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cached = tmp_path / "downloads" / bigbench.SDIST_NAME
    cached.parent.mkdir()
    cached.write_bytes(b"x")

    def no_pip(*args, **kwargs):
        raise AssertionError("pip must not run")

    monkeypatch.setattr(bigbench.subprocess, "Popen", no_pip)
    assert bigbench.download_sdist(tmp_path) == cached


def test_a_local_sdist_copy_replaces_the_download(tmp_path: Path, fake_sdist: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """``SOFT2HARD_BIGBENCH_SDIST`` points at a copy of the sdist: pip never runs (the index may not serve it)."""
    def no_pip(*args, **kwargs):
        raise AssertionError("pip must not run")

    monkeypatch.setattr(bigbench.subprocess, "Popen", no_pip)
    monkeypatch.setenv(bigbench.SDIST_ENV, str(fake_sdist))
    assert bigbench.download_sdist(tmp_path) == fake_sdist
    monkeypatch.setenv(bigbench.SDIST_ENV, str(tmp_path / "missing.tar.gz"))
    with pytest.raises(Soft2HardError, match="SOFT2HARD_BIGBENCH_SDIST=.*missing.tar.gz is not a file"):
        bigbench.download_sdist(tmp_path)


def test_a_release_the_index_does_not_serve_is_a_one_line_error(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """What pip prints when the index lists the package but not the pinned release becomes an actionable error."""
    monkeypatch.delenv(bigbench.SDIST_ENV, raising=False)
    pip_said = ("ERROR: Could not find a version that satisfies the requirement bigbench==1.0.0 (from versions: "
                "0.0.1)\nERROR: No matching distribution found for bigbench==1.0.0\n")
    real_popen = subprocess.Popen
    monkeypatch.setattr(bigbench.subprocess, "Popen", lambda *a, **k: real_popen(
        [sys.executable, "-c", f"import sys; sys.stdout.write({pip_said!r}); sys.exit(1)"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    with pytest.raises(Soft2HardError) as err:
        bigbench.download_sdist(tmp_path)
    message = str(err.value)
    assert "\n" not in message and "does not serve bigbench==1.0.0 (it lists 0.0.1)" in message
    assert bigbench.SDIST_ENV in message and str(tmp_path / "downloads" / bigbench.SDIST_NAME) in message


@pytest.mark.slow
def test_real_bigbench_download_and_extraction(cache_dir: Path) -> None:
    """The real sdist, from the cache, ``SOFT2HARD_BIGBENCH_SDIST`` or the package index. On 2026-12-07 PyPI served
    only bigbench 0.0.1 (no tasks): then this test checks the one-line error and is reported as xfail, so the
    summary says that the real BIG-bench data was not tested."""
    if (bigbench.is_extracted(cache_dir) or (cache_dir / "downloads" / bigbench.SDIST_NAME).is_file()
            or os.environ.get(bigbench.SDIST_ENV)):
        _check_real(cache_dir)
        return
    with tempfile.TemporaryDirectory(prefix="soft2hard-bigbench-") as tmp:  # ~2 GiB: removed afterwards
        try:
            bigbench.download_sdist(Path(tmp))
        except Soft2HardError as err:
            if "does not serve" not in str(err):
                raise
            assert bigbench.SDIST_ENV in str(err) and "\n" not in str(err)
            pytest.xfail(f"real BIG-bench data not tested: {err}")
        _check_real(Path(tmp))


def _check_real(cache: Path) -> None:
    names = {s["name"] for s in list_tasks("bigbench", cache_dir=cache)}
    assert len(names) > 900
    plural = get_task("bigbench/linguistic_mappings/plural_json", cache_dir=cache)
    assert plural.answer_type == "generation" and len(plural.examples) > 1000
    assert any(ex.input == "child" and ex.target == "children" for ex in plural.examples)
    snarks = get_task("bigbench/snarks", cache_dir=cache)
    assert snarks.labels == ("(a)", "(b)")
    emo = get_task("bigbench/multiemo/all_sentence_en", cache_dir=cache)
    assert set(emo.labels or ()) == {"positive", "negative", "neutral", "ambivalent"}
    assert "positive, negative, neutral or ambivalent" in emo.description
    for name in ("bigbench/word_unscrambling", "bigbench/object_counting", "bigbench/irony_identification",
                 "bigbench/arithmetic/2_digit_addition", "bigbench/linguistic_mappings/past_tense_json"):
        assert name in names
        assert len(get_task(name, cache_dir=cache).splits().test) >= 10
