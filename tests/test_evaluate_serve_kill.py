"""kill -9 of `soft2hard evaluate --serve` in the middle of a cell, then the same command again: the rerun starts a
new llama.cpp server on another port, sends only the requests the killed run had not answered (the cache is keyed
by the served model, not the port; audit issue 19, claim 2), and the killed run leaves no orphaned server behind.

Bounded in time: every wait has a deadline, requests go to 127.0.0.1 only, and the servers stop by themselves."""

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow,  # serves the real Gemma3-270M GGUF
              pytest.mark.requires("llama_cpp", hint="llama-cpp-python; scripts/install.sh builds it")]
TRAFFIC = re.compile(r"api:gemma3-270m: (\d+) requests sent \((\d+) retries\), (\d+) answered from the cache")


def _cmd(tiny_dod, tiny_llama_dir, out):
    return [sys.executable, "-m", "soft2hard.cli", "evaluate", "--dod", str(tiny_dod), "--tasks", "heldout",
            "--model", str(tiny_llama_dir), "--target", "none", "--serve", "gemma3-270m",
            "--conditions", "zero_shot,few_shot", "--max-examples", "6", "--concurrency", "1",
            "--out", str(out), "--quiet"]


def _answered(out: Path) -> int:
    db = out / "api_cache.sqlite"
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
            return con.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
    except sqlite3.OperationalError:  # the table is not created yet, or the file is locked for a moment
        return 0


def _servers_of(parent: int) -> list[int]:
    """The llama.cpp servers that process ``parent`` started (its pid is on the launcher's command line)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"llama_cpp.server" in b" ".join(argv) and str(parent).encode() in argv:
            found.append(int(proc.name))
    return found


def test_a_killed_serve_run_resends_only_the_missing_requests(tmp_path, tiny_dod, tiny_llama_dir):
    out = tmp_path / "ev"
    proc = subprocess.Popen(_cmd(tiny_dod, tiny_llama_dir, out), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while _answered(out) < 3 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, f"evaluate ended (status {proc.returncode}) before the kill could land"
    assert _answered(out) >= 3, "no API answer was cached within 300 s"
    servers = _servers_of(proc.pid)
    assert servers, "the running evaluation's llama.cpp server was not found"
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    answered = _answered(out)
    assert 3 <= answered < 6, f"the kill landed after {answered} answers, not in the middle of the first cell"
    deadline = time.time() + 60
    while _servers_of(proc.pid) and time.time() < deadline:  # the server gets SIGTERM when its parent dies
        time.sleep(0.2)
    assert _servers_of(proc.pid) == [], "kill -9 of evaluate left its llama.cpp server running"

    rerun = subprocess.run(_cmd(tiny_dod, tiny_llama_dir, out), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    traffic = TRAFFIC.search(rerun.stderr)
    assert traffic, rerun.stderr
    assert "HTTP Request" not in rerun.stderr  # one traffic line, not one log line per request
    sent, retries, hits = map(int, traffic.groups())
    total = _answered(out)
    assert retries == 0 and sent == total - answered and sent > 0  # exactly the requests the killed run missed
    assert hits >= answered  # every answer the killed run got comes back from the cache
    again = subprocess.run(_cmd(tiny_dod, tiny_llama_dir, out), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert "api:gemma3-270m" not in again.stderr or " 0 requests sent" in again.stderr  # a finished run sends nothing
