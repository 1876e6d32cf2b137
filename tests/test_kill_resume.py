"""kill -9 during `soft2hard tune`, twice, then --resume: the result is identical to an uninterrupted run and no
temporary or half-written file is left behind."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from safetensors.torch import load_file


def _cmd(model_dir, out, *extra):
    return [sys.executable, "-m", "soft2hard.cli", "tune", "--model", str(model_dir), "--task", "gen/first_letter",
            "--tokens", "3", "--steps", "60", "--eval-every", "5", "--batch-size", "4", "--seed", "3",
            "--out", str(out), "--quiet", *extra]


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1] / "src") + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _n_checkpoints(out: Path) -> int:
    root = out / "checkpoints"
    return len([p for p in root.iterdir() if not p.name.startswith(".")]) if root.exists() else 0


def test_kill_9_then_resume_matches_uninterrupted(tmp_path, tiny_llama_dir):
    ref = tmp_path / "ref"
    subprocess.run(_cmd(tiny_llama_dir, ref), check=True, env=_env(), capture_output=True, timeout=300)

    run = tmp_path / "run"
    for kill, wait_for in enumerate((2, 6), start=1):  # kill after 2 checkpoints, then the resumed run after 6
        before = _n_checkpoints(run)
        proc = subprocess.Popen(_cmd(tiny_llama_dir, run, "--resume"), env=_env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 240
        while _n_checkpoints(run) < wait_for and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, f"run {kill} ended (status {proc.returncode}) before kill -9 {kill} could land"
        assert _n_checkpoints(run) >= wait_for, f"run {kill} wrote no checkpoint {wait_for} within 240 s"
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
        assert not (run / "metrics.json").exists(), f"run {kill} finished: kill -9 {kill} interrupted nothing"
        assert _n_checkpoints(run) > before  # the resumed run made progress before its kill
        for ckpt in (run / "checkpoints").iterdir():  # every visible checkpoint is complete
            if not ckpt.name.startswith("."):
                assert (ckpt / "trainer_state.json").exists() and (ckpt / "prompt" / "adapter_model.safetensors").exists()

    subprocess.run(_cmd(tiny_llama_dir, run, "--resume"), check=True, env=_env(), capture_output=True, timeout=300)
    a = load_file(str(ref / "adapter_model.safetensors"))["prompt_embeddings"]
    b = load_file(str(run / "adapter_model.safetensors"))["prompt_embeddings"]
    assert (a == b).all()
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (ref, run))
    assert ma["losses"] == mb["losses"] and ma["test_score"] == mb["test_score"]
    leftovers = [p for p in run.rglob(".*") if p.name.endswith((".tmp", ".old"))]
    assert leftovers == []
