"""kill -9 once, at a seeded moment mid-run, during each long job (tune, dod build, translator train, evaluate),
then resume: the result is identical to an uninterrupted run, no file fails to parse, no finished work is lost
and no temporary is left behind. The bounded CI version of bench/faults.py (whose helpers it uses)."""

from __future__ import annotations

import importlib.util
import random
import sys
from pathlib import Path

import pytest

_BENCH = Path(__file__).resolve().parents[1] / "bench" / "faults.py"
# loaded by file path: putting bench/ on sys.path would let bench/inspect.py shadow the standard library's inspect
_spec = importlib.util.spec_from_file_location("soft2hard_bench_faults", _BENCH)
faults = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = faults  # dataclasses look their module up there
_spec.loader.exec_module(faults)

TIMEOUT = 600  # seconds for any one run: the test always ends


@pytest.mark.slow
@pytest.mark.parametrize("name", faults.JOBS)
def test_kill_9_mid_run_then_resume_is_identical(name, request, tmp_path, tiny_llama_dir, cache_dir):
    if name == "tune":
        job = faults.tune_job(tiny_llama_dir, steps=20, eval_every=5)
    elif name == "dod":
        job = faults.dod_job(tiny_llama_dir)
    elif name == "translator":
        job = faults.translator_job(request.getfixturevalue("tiny_dod"), epochs=4)
    else:
        job = faults.evaluate_job(request.getfixturevalue("tiny_dod"), tiny_llama_dir,
                                  request.getfixturevalue("tiny_gemma_dir"), max_examples=2)
    reference = faults.run_reference(job, tmp_path, cache_dir, TIMEOUT)
    assert faults.temporaries(reference.path) == [] and faults.corrupt_files(reference.path) == []

    # one seeded moment between the reference's first and middle unit of finished work (a checkpoint, a finished
    # run, a result row), replayed on the job's progress: the kill lands mid-run whatever the machine's load
    timeline = reference.timeline
    assert len(timeline) >= 3, timeline
    # a reference timed under heavy load replays too late on an idle machine (the run can end before its kill):
    # then try again in a fresh folder with the window narrowed towards the first unit of finished work
    for attempt, end in enumerate((len(timeline) // 2, 1, 0)):
        window = (timeline[0], timeline[end])  # the last try kills right after the first unit
        result = faults.inject_faults(job, reference, tmp_path / f"attempt{attempt}", cache_dir, kills=1,
                                      rng=random.Random(f"{attempt}:{name}"), timeout=TIMEOUT, window=window,
                                      max_runs=1)
        if result.kills == 1:
            break

    assert result.kills == 1 and result.kills_after_first_write == 1, \
        f"the run finished before its kill; the test proves nothing: {result.events}"
    assert result.corrupt == [], "a kill left a file that does not parse"
    assert result.lost == [], "finished work disappeared after a kill"
    assert result.leftover_temporaries == [], "the resumed run left temporaries behind"
    assert result.identical, result.differences


def test_the_checks_see_corrupt_files_and_temporaries(tmp_path):
    """The folder checks themselves: a truncated JSON or safetensors file is reported, temporaries are listed
    (and not parsed: a killed writer may leave them half-written)."""
    import torch
    from safetensors.torch import save_file

    (tmp_path / "ok").mkdir()
    (tmp_path / "ok" / "a.json").write_text('{"a": 1}')
    save_file({"x": torch.arange(4.0)}, str(tmp_path / "ok" / "w.safetensors"))
    assert faults.corrupt_files(tmp_path) == [] and faults.temporaries(tmp_path) == []

    data = (tmp_path / "ok" / "w.safetensors").read_bytes()
    (tmp_path / "ok" / "half.safetensors").write_bytes(data[: len(data) - 8])
    (tmp_path / "ok" / "half.json").write_text('{"a": ')
    (tmp_path / ".b.json.x1y2.tmp").write_text('{"a": ')
    (tmp_path / ".step_000010.old").mkdir()
    (tmp_path / ".step_000010.old" / "s.json").write_text("{")
    (tmp_path / "ok" / ".final").mkdir()
    assert sorted(c.split(" ")[0] for c in faults.corrupt_files(tmp_path)) == ["ok/half.json", "ok/half.safetensors"]
    assert sorted(faults.temporaries(tmp_path)) == [".b.json.x1y2.tmp", ".step_000010.old", "ok/.final"]


def test_the_comparison_sees_a_changed_bit(tmp_path):
    import torch
    from safetensors.torch import save_file

    a, b = torch.arange(6.0), torch.arange(6.0)
    b[3] = torch.nextafter(b[3], torch.tensor(10.0))
    save_file({"p": a}, str(tmp_path / "a.safetensors"))
    save_file({"p": b}, str(tmp_path / "b.safetensors"))
    assert faults.same_tensors(tmp_path / "a.safetensors", tmp_path / "a.safetensors") == []
    assert faults.same_tensors(tmp_path / "a.safetensors", tmp_path / "b.safetensors") != []
