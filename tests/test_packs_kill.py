"""kill -9 in the middle of a pack (`soft2hard tune-many`), twice, then --resume: every run is bit-identical to
an uninterrupted pack, and no temporary file is left behind."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

TASKS = "gen/first_letter,gen/uppercase,gen/starts_with_vowel"
pytestmark = pytest.mark.slow  # three subprocess runs, about 3 min


def _cmd(model_dir, out, *extra):
    return [sys.executable, "-m", "soft2hard.cli", "tune-many", "--model", str(model_dir), "--tasks", TASKS,
            "--seeds", "0,1", "--pack", "4", "--tokens", "3", "--steps", "40", "--eval-every", "4",
            "--batch-size", "4", "--out", str(out), "--quiet", *extra]


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1] / "src") + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _progress(out: Path) -> int:
    """Steps recorded in the pack journal so far (summed over its active jobs), -1 before it exists."""
    try:
        journal = json.loads((out / "pack-journal.json").read_text())
    except (OSError, ValueError):
        return -1
    return sum(step for _, step in journal["active"]) + 1000 * sum(
        (out / j.split(str(out) + "/")[-1] / "metrics.json").exists() for j in journal["jobs"])


def test_kill_9_mid_pack_then_resume_is_bit_identical(tmp_path, tiny_llama_dir):
    ref = tmp_path / "ref"
    subprocess.run(_cmd(tiny_llama_dir, ref), check=True, env=_env(), capture_output=True, timeout=300)

    run = tmp_path / "run"
    for kill, wait_for in enumerate((8, 4008), start=1):  # mid first wave; then mid second wave
        before = _progress(run)
        proc = subprocess.Popen(_cmd(tiny_llama_dir, run, "--resume"), env=_env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 240
        while _progress(run) < wait_for and proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, f"run {kill} ended (status {proc.returncode}) before kill -9 {kill} landed"
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
        assert _progress(run) > before, f"run {kill} made no progress before its kill"
        assert json.loads((run / "pack-journal.json").read_text())["complete"] is False

    done = subprocess.run(_cmd(tiny_llama_dir, run, "--resume"), env=_env(), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = sorted(p.relative_to(ref) for p in ref.glob("*/seed*"))
    assert len(runs) == 6
    for rel in runs:
        a, b = ref / rel, run / rel
        assert (a / "adapter_model.safetensors").read_bytes() == (b / "adapter_model.safetensors").read_bytes(), rel
        ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (a, b))
        assert ma["losses"] == mb["losses"] and ma["validation"] == mb["validation"], rel
        assert ma["test_score"] == mb["test_score"], rel
    leftovers = [p for p in run.rglob(".*") if p.name.endswith((".tmp", ".old"))]
    assert not leftovers, leftovers
