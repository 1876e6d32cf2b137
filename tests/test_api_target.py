"""The API target against a real OpenAI-compatible server on 127.0.0.1: llama.cpp serving Gemma3-270M's GGUF.

Bounded in time (each request has a timeout; the server is killed at the end of the session)."""

import pytest

from soft2hard.errors import Soft2HardError
from soft2hard.serving import LlamaServer, gguf_path, is_ready
from soft2hard.targets import APITarget

pytestmark = [pytest.mark.slow,  # serves the real Gemma3-270M GGUF
              pytest.mark.requires("llama_cpp", hint="llama-cpp-python; scripts/install.sh builds it")]
PROMPTS = [f"Input: {w}\nOutput:" for w in ("cat", "dog", "house", "tree", "river", "apple")]


@pytest.fixture(scope="module")
def server(tmp_path_factory, cache_dir):
    log = tmp_path_factory.mktemp("server") / "llama.log"
    srv = LlamaServer(gguf_path("gemma3-270m", cache_dir), log=log, alias="gemma-3-270m").start()
    yield srv
    srv.kill()


def target(server, tmp_path, **kw):
    return APITarget(server.base_url, "gemma-3-270m", cache_path=tmp_path / "cache.sqlite", timeout=30,
                     max_retries=2, backoff=0.1, **kw)


def test_completions_are_greedy_and_cached(server, tmp_path):
    t = target(server, tmp_path)
    first = t.complete(PROMPTS[:3], max_tokens=6)
    assert len(first) == 3 and all(isinstance(x, str) for x in first) and t.stats.requests == 3
    again = target(server, tmp_path)
    assert again.complete(PROMPTS[:3], max_tokens=6) == first
    assert again.stats.requests == 0 and again.stats.cache_hits == 3


def test_server_restart_mid_evaluation_sends_no_duplicate_request(server, tmp_path):
    reference = target(server, tmp_path / "ref").complete(PROMPTS, max_tokens=6)
    t = target(server, tmp_path)
    assert t.complete(PROMPTS[:3], max_tokens=6) == reference[:3]  # the evaluation gets half-way
    server.kill()  # the server dies mid-evaluation
    assert not is_ready(server.base_url)
    with pytest.raises(Soft2HardError, match="failed after 3 attempt"):
        target(server, tmp_path, concurrency=1).complete(PROMPTS, max_tokens=6)
    server.start()
    rerun = target(server, tmp_path)
    answers = rerun.complete(PROMPTS, max_tokens=6)
    assert rerun.stats.requests == 3 and rerun.stats.cache_hits == 3  # only the unfinished half is requested
    # The finished half comes back from the cache as it was. The other half is not compared with `reference`:
    # llama-cpp-python reuses the KV of the previous request's common prefix ("Input: "), so a fresh server's
    # floats differ from a warm one's, and on an AVX-512 build that flipped a greedy token ('tree': ' 10000'
    # vs ' 1.0').
    assert answers[:3] == reference[:3] and all(isinstance(a, str) for a in answers)
    again = target(server, tmp_path)
    assert again.complete(PROMPTS, max_tokens=6) == answers and again.stats.requests == 0


def test_chat_mode_and_bad_endpoint(server, tmp_path):
    t = target(server, tmp_path, mode="chat")
    assert t.chat and "messages" in t.request("hi", 4, ("\n",))
    assert isinstance(t.complete(["Say hello."], max_tokens=4)[0], str)
    bad = APITarget(f"http://127.0.0.1:{server.port}/nope", "gemma-3-270m", timeout=10, max_retries=0)
    with pytest.raises(Soft2HardError, match="request failed"):
        bad.complete(["x"], max_tokens=2)


@pytest.mark.slow
def test_a_server_on_a_new_port_reuses_the_cache(server, tmp_path):
    """`evaluate --serve` starts each run's server on a free port: the cache is keyed by the model file and the
    server settings (LlamaServer.identity), so a rerun sends nothing (audit issue 19, item 4)."""
    first = APITarget(server.base_url, "gemma-3-270m", cache_path=tmp_path / "cache.sqlite", timeout=30,
                      identity=server.identity)
    texts = first.complete(PROMPTS[:3], max_tokens=6)
    assert first.stats.requests == 3
    rerun_server = LlamaServer(server.gguf, alias=server.alias)  # never started: any request would fail
    assert rerun_server.port != server.port and rerun_server.identity == server.identity
    rerun = APITarget(rerun_server.base_url, "gemma-3-270m", cache_path=tmp_path / "cache.sqlite", timeout=5,
                      max_retries=0, identity=rerun_server.identity)
    assert rerun.complete(PROMPTS[:3], max_tokens=6) == texts
    assert rerun.stats.requests == 0 and rerun.stats.cache_hits == 3


def test_an_api_inducer_goes_through_the_sqlite_cache(server, tmp_path):
    """`evaluate --inducer API_MODEL`: the induction request is cached like every other completion."""
    from soft2hard.interpret.induction import induce
    from soft2hard.tasks.base import Example

    demos = [Example("cat", "cats"), Example("box", "boxes"), Example("fox", "foxes")]
    first_target = target(server, tmp_path)
    first = induce(first_target.complete, demos)
    assert first_target.stats.requests == 1 and isinstance(first["text"], str)
    again = target(server, tmp_path)
    assert induce(again.complete, demos) == first
    assert again.stats.requests == 0 and again.stats.cache_hits == 1
