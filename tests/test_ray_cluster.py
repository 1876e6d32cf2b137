"""A tiny DoD build sent to a real, separately started Ray cluster (``dod build --address``).

The cluster is ``ray start --head --block`` on 127.0.0.1 with its own ports and its own temporary folder, run in
its own process group: teardown stops that process and then kills whatever is left in its group, never other
Ray clusters on the machine (``ray stop`` would kill every Ray process of the user, by name)."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

from soft2hard.dod.build import build, is_finished, run_dir
from soft2hard.dod.manifest import Manifest
from tests.conftest import TASKS, tiny_config

pytestmark = pytest.mark.slow  # a Ray cluster takes a while to start on a busy 2-core machine

RAY = Path(sys.executable).with_name("ray")
START_TIMEOUT = 120  # seconds for `ray start` to come up
STOP_TIMEOUT = 60


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _processes_under(folder: Path) -> list[int]:
    """Ids of live processes whose command line names ``folder`` (this cluster's session folder, nobody else's)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            try:
                if str(folder).encode() in (proc / "cmdline").read_bytes():
                    pids.append(int(proc.name))
            except OSError:
                continue
    return pids


def _stop(proc: subprocess.Popen, temp: Path) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)  # `ray start --block` shuts its node down on SIGTERM
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT)
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # anything left in the cluster's own process group
    except ProcessLookupError:
        pass
    for pid in _processes_under(temp):  # a process that left the group but still runs from this session
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _reset_ray_auth() -> None:
    """Make this process's Ray re-read its authentication settings from the environment."""
    from ray._raylet import AuthenticationTokenLoader, Config

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


@pytest.fixture
def ray_cluster(monkeypatch):
    """(address, temp folder) of a fresh 2-CPU Ray head on 127.0.0.1, stopped afterwards whatever happens.

    The cluster and this process (its driver) share a token of their own, so neither reads nor writes the
    user's ~/.ray/auth_token."""
    if not RAY.exists():
        pytest.fail(f"{RAY} is missing: Ray is a dependency of soft2hard (pip install -e .)")
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", secrets.token_hex(32))
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    _reset_ray_auth()
    temp = Path(tempfile.mkdtemp(prefix="s2h-ray-", dir="/tmp"))  # short: Ray's unix sockets live under it
    port, agent_port = _free_ports(2)
    cmd = [str(RAY), "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1", "--num-cpus=2",
           "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp}",
           f"--dashboard-agent-listen-port={agent_port}", "--block"]
    log = temp / "ray-start.log"
    with open(log, "wb") as sink:
        proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=dict(os.environ))
    try:
        deadline = time.time() + START_TIMEOUT
        # `ray start` writes the cluster's address into its temp folder once the head node is up
        while not (temp / "ray_current_cluster").exists():
            if proc.poll() is not None:
                pytest.fail(f"ray start exited with status {proc.returncode}:\n{log.read_text()[-3000:]}")
            if time.time() > deadline:
                pytest.fail(f"ray start did not come up within {START_TIMEOUT} s:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        # Ray records (and binds) the machine's address even for --node-ip-address=127.0.0.1; the driver
        # still connects through the loopback
        assert (temp / "ray_current_cluster").read_text().strip().endswith(f":{port}")
        yield f"127.0.0.1:{port}", temp
    finally:
        _stop(proc, temp)
        monkeypatch.undo()
        _reset_ray_auth()
        assert _processes_under(temp) == [], "Ray processes of the test cluster outlived it"
        shutil.rmtree(temp, ignore_errors=True)


def test_build_on_an_existing_ray_cluster(tmp_path, tiny_dod, tiny_llama_dir, cache_dir, ray_cluster):
    import ray

    address, temp = ray_cluster
    assert not ray.is_initialized()
    out = tmp_path / "dod"
    m = build(out, tiny_config(tiny_llama_dir), cache_dir, workers=1, address=address, progress=False)
    assert not ray.is_initialized()  # the build disconnects from the cluster it was sent to

    assert sorted(t.name for t in m.tasks) == sorted(TASKS)
    assert {t.split for t in m.tasks} == {"train", "heldout"}
    for t in m.tasks:
        folder = run_dir(out, t.name, 0)
        assert is_finished(out, t.name, 0) and (folder / "adapter_model.safetensors").is_file()
        assert [p.step for p in t.prompts] == [2, 4] and sum(p.best for p in t.prompts) == 1
        assert all((folder / "checkpoints" / f"step_{p.step:06d}").is_dir() for p in t.prompts)
    assert Manifest.load(out).tasks == m.tasks

    # the work ran on that cluster: its session logs hold this driver and the actor that tuned the prompts
    logs = list((temp / "session_latest" / "logs").iterdir())
    assert any(p.name.startswith("python-core-driver-") for p in logs), sorted(p.name for p in logs)
    assert any(p.name.startswith("python-core-worker-") for p in logs), sorted(p.name for p in logs)

    # the same prompts as the in-process build, up to float summation order (other thread counts)
    ref = {e.id: x for _, e, x in Manifest.load(tiny_dod).iter_prompts()}
    got = {e.id: x for _, e, x in m.iter_prompts()}
    assert ref.keys() == got.keys()
    assert all(torch.allclose(ref[k], got[k], atol=1e-4) for k in ref)
