"""Start a local OpenAI-compatible server for a built-in model (llama.cpp's server from ``llama-cpp-python``).

The API target and its tests talk to a real server on 127.0.0.1: llama.cpp serving the GGUF file that a
built-in model package carries. ``scripts/install.sh`` builds ``llama-cpp-python`` without AMX kernels, because
the default ``-march=native`` build crashes on CPUs with AMX (ASSETS.md). The server is started in its own
process session so that it can be stopped, killed and restarted as a unit.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from soft2hard.errors import Soft2HardError
from soft2hard.models import BUILTIN_MODELS, default_cache_dir


def gguf_path(model: str, cache_dir: Path | None = None) -> Path:
    """The GGUF file of a built-in model (Gemma3 is assembled from its chunk packages on first use)."""
    if model not in BUILTIN_MODELS:
        raise Soft2HardError(f"no GGUF file for {model!r}; built-in models are {', '.join(BUILTIN_MODELS)}")
    return BUILTIN_MODELS[model].locate(Path(cache_dir or default_cache_dir()))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def is_ready(base_url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(base_url.rstrip("/") + "/models", timeout=timeout) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def file_fingerprint(path: Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's size, first and last MiB: which model file it is, wherever it lies and whenever it was
    written (a GGUF's header holds its metadata and tensor table), without reading a few hundred MiB."""
    path = Path(path)
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        digest.update(f.read(chunk))
        f.seek(max(0, size - chunk))
        digest.update(f.read(chunk))
    return digest.hexdigest()


# Runs llama.cpp's server with Linux's parent-death signal set, so that a client killed with SIGKILL (which runs no
# cleanup) does not leave an orphaned server holding a port and a model's memory. The signal fires when the thread
# that started the server exits: start it from a thread that lives as long as it is needed (the main thread).
_LAUNCH = """import ctypes, os, runpy, signal, sys
parent = int(sys.argv.pop(1))
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
except (AttributeError, OSError):  # not Linux: no parent-death signal; stop() and kill() still work
    pass
if os.getppid() != parent:  # the parent died before the signal was armed
    sys.exit(0)
runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
"""


class LlamaServer:
    """``python -m llama_cpp.server`` on 127.0.0.1 for one GGUF file; ``start``/``stop``/``kill`` and restart."""

    def __init__(self, gguf: Path, port: int | None = None, log: Path | None = None, n_ctx: int = 2048,
                 alias: str | None = None) -> None:
        if importlib.util.find_spec("llama_cpp") is None:
            raise Soft2HardError("llama-cpp-python is not installed; run scripts/install.sh (it builds it without "
                                 "AMX, see ../shared/ASSETS.md)")
        self.gguf, self.port, self.log, self.n_ctx = Path(gguf), port or free_port(), log, n_ctx
        self.alias = alias or self.gguf.stem
        self.proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def identity(self) -> str:
        """What the server answers with, for the response cache: the model file and the server's settings and
        version, not the (random) port, so a rerun on a new port still hits the cache."""
        try:
            version = importlib.metadata.version("llama_cpp_python")
        except importlib.metadata.PackageNotFoundError:
            version = "unknown"
        return (f"llama.cpp/{version}/{self.gguf.name}/sha256-{file_fingerprint(self.gguf)[:16]}"
                f"/n_ctx={self.n_ctx}/alias={self.alias}")

    def start(self, timeout: float = 180.0) -> LlamaServer:
        cmd = [sys.executable, "-c", _LAUNCH, str(os.getpid()), "--model", str(self.gguf), "--host", "127.0.0.1",
               "--port", str(self.port), "--n_ctx", str(self.n_ctx), "--model_alias", self.alias]
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise Soft2HardError(f"llama.cpp server exited with status {self.proc.returncode} "
                                     f"(log: {self.log or 'not kept'})")
            if is_ready(self.base_url):
                return self
            time.sleep(0.5)
        self.kill()
        raise Soft2HardError(f"llama.cpp server not ready on port {self.port} after {timeout:.0f} s")

    def _signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
        self.proc = None

    def stop(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def __enter__(self) -> LlamaServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
