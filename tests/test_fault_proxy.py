"""The API target behind a faulty network: a fault-injecting proxy (tests/fault_proxy.py) in front of the real
llama.cpp server serving Gemma3-270M's GGUF on 127.0.0.1.

Checked for every fault type alone, for a seeded mix, for a permanent failure and for ``soft2hard evaluate``:
the texts equal a fault-free direct run's, retries are bounded, the upstream is never paid again for a request
whose answer was delivered, a rerun on the same cache sends nothing, and the API key leaks nowhere. Run with
``-s`` to see the measured table (docs/RELIABILITY.md, "Faulty API server")."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
import traceback

import pytest

from soft2hard.errors import Soft2HardError
from soft2hard.serving import LlamaServer, gguf_path
from soft2hard.targets import APITarget
from tests.fault_proxy import FAULTS, FORWARDED_FAULTS, FaultProxy, always, first_attempts, no_faults, seeded

pytestmark = [pytest.mark.slow,  # serves the real Gemma3-270M GGUF
              pytest.mark.requires("llama_cpp", hint="llama-cpp-python; scripts/install.sh builds it")]
MODEL = "gemma-3-270m"
WORDS = ("cat", "dog", "house", "tree", "river", "apple", "stone", "cloud", "bird", "chair", "lamp", "road",
         "bread", "ship", "glass", "horse", "paper", "window", "garden", "mountain")
# few-shot prompts with a clear answer: llama.cpp reuses the KV cache of the previous request's common prefix, so
# an ambiguous prompt ("Input: dog\nOutput:") can flip its greedy answer with the order of requests, which faults
# change; these give the same answers in any order (checked over shuffled orders)
PROMPTS = [f"Plural forms.\nbook: books\ncar: cars\n{w}:" for w in WORDS]
MAX_TOKENS = 6
MAX_RETRIES = 3
STALL_TIMEOUT = 5.0  # the client's timeout where the proxy stalls (the stall lasts a second longer)
SECRET = "sk-test-SECRET123"
ROWS: list[dict] = []  # the measured table, printed at the end of the module


@pytest.fixture(scope="module")
def server(tmp_path_factory, cache_dir):
    log = tmp_path_factory.mktemp("server") / "llama.log"
    srv = LlamaServer(gguf_path("gemma3-270m", cache_dir), log=log, alias=MODEL).start()
    yield srv
    srv.kill()


@pytest.fixture(scope="module")
def reference(server) -> list[str]:
    """The texts of a direct, fault-free run (no proxy, no cache)."""
    return APITarget(server.base_url, MODEL, timeout=60, max_retries=0).complete(PROMPTS, max_tokens=MAX_TOKENS)


@pytest.fixture(scope="module", autouse=True)
def summary_table():
    yield
    if ROWS:
        print("\n\n" + table(ROWS))


def table(rows: list[dict]) -> str:
    cols = ["case", "faults injected", "prompts", "completed", "retries", "requests received", "upstream paid",
            "duplicates", "rerun requests", "seconds"]
    lines = ["| " + " | ".join(cols) + " |", "|---|---|" + "---:|" * (len(cols) - 2)]
    for r in rows:
        lines.append("| " + " | ".join(str(r.get(c, "")) for c in cols) + " |")
    return "\n".join(lines)


def record(case: str, proxy: FaultProxy, target: APITarget | None, prompts: int, completed: int, seconds: float,
           rerun: int | str = "") -> dict:
    c = proxy.counts()
    row = {"case": case, "faults injected": ", ".join(f"{k}: {v}" for k, v in sorted(c["faults"].items())) or "0",
           "prompts": prompts, "completed": completed, "retries": target.stats.retries if target else "",
           "requests received": c["received"], "upstream paid": c["forwarded"], "duplicates": c["duplicates"],
           "rerun requests": rerun, "seconds": f"{seconds:.1f}"}
    ROWS.append(row)
    print("\n" + json.dumps(row))
    return row


def api(proxy: FaultProxy, cache, **kw) -> APITarget:
    kw = {"timeout": 30.0, "max_retries": MAX_RETRIES, "backoff": 0.05, "concurrency": 4, **kw}
    return APITarget(proxy.base_url + "/v1", MODEL, cache_path=cache, **kw)


def check_delivered(proxy: FaultProxy, prompts: list[str], texts: list[str]) -> None:
    """The client returns, for each prompt, exactly what the upstream answered to that prompt."""
    delivered = proxy.delivered_texts()
    assert [delivered[p].split("\n")[0] for p in prompts] == texts


def check_paid_once(proxy: FaultProxy, n_prompts: int) -> None:
    """Every prompt delivered exactly once; the upstream paid once per prompt, plus once per fault that struck
    after the upstream had answered (truncated, malformed), and never after a delivery."""
    c = proxy.counts()
    lost_after_paying = sum(v for k, v in c["faults"].items() if k in FORWARDED_FAULTS)
    assert c["delivered"] == n_prompts and set(proxy.delivered.values()) == {1}
    assert c["forwarded"] == n_prompts + lost_after_paying
    assert c["duplicates"] == 0


# (fault, faults per prompt): every prompt meets the fault on its first n requests
SINGLE = [(f, 1 if f == "stall" else 2) for f in FAULTS]


@pytest.mark.parametrize(("fault", "per_prompt"), SINGLE, ids=[f for f, _ in SINGLE])
def test_each_fault_type_alone(server, reference, tmp_path, fault, per_prompt):
    prompts, n = PROMPTS[:6], 6
    timeout = STALL_TIMEOUT if fault == "stall" else 30.0
    with FaultProxy(server.base_url, first_attempts(fault, per_prompt), stall_s=STALL_TIMEOUT + 1) as proxy:
        t0 = time.monotonic()
        t = api(proxy, tmp_path / "cache.sqlite", timeout=timeout)
        texts = t.complete(prompts, max_tokens=MAX_TOKENS)
        seconds = time.monotonic() - t0
        assert texts == reference[:n]
        check_delivered(proxy, prompts, texts)
        c = proxy.counts()
        assert c["faults"] == {fault: per_prompt * n}
        assert t.stats.retries == per_prompt * n <= MAX_RETRIES * n  # one retry per fault, bounded
        assert t.stats.requests == c["received"] == (per_prompt + 1) * n
        check_paid_once(proxy, n)
        if fault == "429-retry-after":
            # the client's own backoff decides the wait, not Retry-After (1 s): measured, reported in the docs
            print(f"\nretry gaps after 429 + Retry-After: 1 -> min {min(proxy.retry_gaps()):.2f} s")
        before = c["received"]
        again = api(proxy, tmp_path / "cache.sqlite", timeout=timeout)
        assert again.complete(prompts, max_tokens=MAX_TOKENS) == texts
        assert again.stats.requests == 0 and again.stats.cache_hits == n
        assert proxy.counts()["received"] == before
        record(fault, proxy, t, n, len(texts), seconds, rerun=proxy.counts()["received"] - before)
    assert proxy.alive_threads() == 0


def test_seeded_mixed_schedule(server, reference, tmp_path):
    """30 % of requests fail, with every fault type in the draw; at most MAX_RETRIES faults per prompt."""
    schedule = seeded(0.3, FAULTS, seed=7, max_per_key=MAX_RETRIES)
    with FaultProxy(server.base_url, schedule, stall_s=STALL_TIMEOUT + 1) as proxy:
        t0 = time.monotonic()
        t = api(proxy, tmp_path / "cache.sqlite", timeout=STALL_TIMEOUT)
        texts = t.complete(PROMPTS, max_tokens=MAX_TOKENS)
        seconds = time.monotonic() - t0
        assert texts == reference
        check_delivered(proxy, PROMPTS, texts)
        c = proxy.counts()
        n_faults = sum(c["faults"].values())
        assert n_faults >= 5 and len(c["faults"]) >= 3  # the seed gives a real mix
        assert t.stats.retries == n_faults <= MAX_RETRIES * len(PROMPTS)
        assert t.stats.requests == c["received"] == len(PROMPTS) + n_faults
        check_paid_once(proxy, len(PROMPTS))
        before = c["received"]
        again = api(proxy, tmp_path / "cache.sqlite", timeout=STALL_TIMEOUT)
        assert again.complete(PROMPTS, max_tokens=MAX_TOKENS) == texts and again.stats.requests == 0
        record("mixed 30 % (seed 7)", proxy, t, len(PROMPTS), len(texts), seconds,
               rerun=proxy.counts()["received"] - before)
    assert proxy.alive_threads() == 0


def test_permanent_failure_is_bounded_and_keeps_the_key_secret(server, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)  # every logger, the openai client's and httpx's included
    cache = tmp_path / "cache.sqlite"
    with FaultProxy(server.base_url, no_faults) as proxy:
        ok = api(proxy, cache, api_key=SECRET)
        ok.complete(PROMPTS[:2], max_tokens=MAX_TOKENS)  # the cache holds rows written with the key in use
        assert f"Bearer {SECRET}" in proxy.auth_values  # the key was really sent

        proxy.schedule = always("500")
        proxy.reset_counts()
        t = api(proxy, cache, api_key=SECRET, concurrency=1)
        t0 = time.monotonic()
        with pytest.raises(Soft2HardError) as info:
            t.complete(PROMPTS[2:3], max_tokens=MAX_TOKENS)
        seconds = time.monotonic() - t0
        c = proxy.counts()
        assert c["received"] == t.stats.requests == MAX_RETRIES + 1 and c["forwarded"] == 0
        assert c["faults"] == {"500": MAX_RETRIES + 1}
        assert seconds < 10  # backoff 0.05 s x (1 + 2 + 4), jittered
        record("500 forever (1 prompt)", proxy, t, 1, 0, seconds)

        # several prompts in flight: each started prompt makes exactly MAX_RETRIES + 1 attempts, the queued are
        # dropped
        proxy.reset_counts()
        many = api(proxy, cache, api_key=SECRET, concurrency=2)
        t0 = time.monotonic()
        with pytest.raises(Soft2HardError, match="failed after 4 attempt"):
            many.complete(PROMPTS[2:14], max_tokens=MAX_TOKENS)
        seconds = time.monotonic() - t0
        c = proxy.counts()
        assert c["received"] % (MAX_RETRIES + 1) == 0 and c["received"] < 12 * (MAX_RETRIES + 1)
        assert c["forwarded"] == 0 and seconds < 10
        record("500 forever (12 prompts, 2 at a time)", proxy, many, 12, 0, seconds)
    assert proxy.alive_threads() == 0

    msg = str(info.value)
    assert "\n" not in msg and "after 4 attempt(s)" in msg and "InternalServerError" in msg
    assert SECRET not in msg and "SECRET123" not in "".join(traceback.format_exception(info.value))
    files = sorted(tmp_path.glob("cache.sqlite*"))  # the database, its WAL and shared-memory files
    assert files and all(b"SECRET123" not in f.read_bytes() for f in files)
    assert {r.name.split(".")[0] for r in caplog.records} >= {"openai", "soft2hard"}  # DEBUG capture worked
    logged = caplog.text + "".join(f"{r.getMessage()} {r.args!r}" for r in caplog.records)
    assert "SECRET123" not in logged


def evaluate_cmd(proxy: FaultProxy, out, *extra: str) -> list[str]:
    return [sys.executable, "-m", "soft2hard.cli", "evaluate", "--target", "none",
            "--base-url", proxy.base_url + "/v1", "--api-model", MODEL, "--conditions", "zero_shot,few_shot",
            "--tasks", "gen/plural", "--max-examples", "6", "--out", str(out), "--timeout", str(STALL_TIMEOUT),
            "--max-retries", "4", "--quiet", *extra]


def run_cli(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)


def test_evaluate_cli_through_a_faulty_proxy(server, tmp_path):
    out = tmp_path / "eval"
    schedule = seeded(0.3, FAULTS, seed=3, max_per_key=4)
    with FaultProxy(server.base_url, schedule, stall_s=STALL_TIMEOUT + 1) as proxy:
        t0 = time.monotonic()
        done = run_cli(evaluate_cmd(proxy, out))
        seconds = time.monotonic() - t0
        assert done.returncode == 0, done.stderr[-3000:]
        rows = json.loads((out / "results.json").read_text())
        assert sorted(r["condition"] for r in rows) == ["few_shot", "zero_shot"]
        assert {r["model"] for r in rows} == {f"api:{MODEL}"}
        c = proxy.counts()
        assert sum(c["faults"].values()) > 0
        check_paid_once(proxy, c["keys"])  # one delivered answer per distinct request, none paid twice
        assert c["keys"] == 12  # 6 examples x 2 conditions
        first = c["received"]
        row = record("evaluate CLI, mixed 30 % (seed 3)", proxy, None, c["keys"], c["delivered"], seconds)
        row["retries"] = c["received"] - c["keys"]  # the subprocess's stats: every extra request is a retry

        again = run_cli(evaluate_cmd(proxy, out))  # resume: every cell is done
        assert again.returncode == 0, again.stderr[-3000:]
        assert proxy.counts()["received"] == first
        fresh = run_cli(evaluate_cmd(proxy, tmp_path / "eval2", "--api-cache", str(out / "api_cache.sqlite")))
        assert fresh.returncode == 0, fresh.stderr[-3000:]  # a new folder on the old cache: all answers cached
        assert proxy.counts()["received"] == first
        rows2 = json.loads((tmp_path / "eval2" / "results.json").read_text())
        assert [(r["condition"], r["score"]) for r in rows2] == [(r["condition"], r["score"]) for r in rows]
        ROWS[-1]["rerun requests"] = proxy.counts()["received"] - first
    assert proxy.alive_threads() == 0
