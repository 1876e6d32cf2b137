"""Targets and the SQLite response cache (the API server tests live in test_api_target.py)."""

import threading

import pytest

from soft2hard.cache import ResponseCache, request_key
from soft2hard.errors import Soft2HardError
from soft2hard.targets import APITarget, LocalTarget, TargetsConfig, is_chat_model_name, open_targets


def test_cache_round_trip_persists_and_is_keyed_by_the_whole_request(tmp_path):
    path = tmp_path / "c.sqlite"
    cache = ResponseCache(path)
    req = {"endpoint": "http://127.0.0.1:1/v1/completions", "model": "m", "prompt": "hi", "max_tokens": 4}
    assert cache.get(req) is None
    cache.put(req, "hello")
    assert cache.get(req) == "hello" and cache.get({**req, "max_tokens": 5}) is None
    assert request_key(req) == request_key(dict(reversed(list(req.items()))))
    cache.close()
    again = ResponseCache(path)
    assert again.get(req) == "hello" and len(again) == 1


def test_cache_is_thread_safe(tmp_path):
    cache = ResponseCache(tmp_path / "c.sqlite")

    def work(i):
        for j in range(20):
            cache.put({"i": i, "j": j}, f"{i}-{j}")
    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(cache) == 80 and cache.get({"i": 3, "j": 19}) == "3-19"


def test_corrupt_cache_is_a_one_line_error(tmp_path):
    path = tmp_path / "bad.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(Soft2HardError, match="bad.sqlite") as err:
        ResponseCache(path)
    assert "\n" not in str(err.value)


def test_api_key_never_reaches_the_cache_key(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-123")
    target = APITarget("http://127.0.0.1:9/v1", "gemma-3-270m", cache_path=tmp_path / "c.sqlite")
    req = target.request("hello", 8, ("\n",))
    assert "sk-secret-123" not in repr(req) and req["prompt"] == "hello" and not target.chat
    assert APITarget("http://127.0.0.1:9/v1", "SmolLM2-135M-Instruct").chat
    assert is_chat_model_name("gpt-4o-mini") and not is_chat_model_name("gemma-3-270m")


def test_local_target_completion_and_chat(tiny_llama):
    target = LocalTarget(tiny_llama, mode="completion")
    outs = target.complete(["Input: cat\nOutput:", "Input: dog\nOutput:"], max_tokens=3)
    assert len(outs) == 2 and all(isinstance(o, str) and "\n" not in o for o in outs)
    assert outs == [tiny_llama.generate(None, ["Input: cat\nOutput:"], 3)[0],
                    tiny_llama.generate(None, ["Input: dog\nOutput:"], 3)[0]]
    chat = LocalTarget(tiny_llama)  # the SmolLM2 tokenizer carries a chat template
    assert chat.chat and "<|im_start|>user" in chat.format("hi")
    with pytest.raises(Soft2HardError, match="mode"):
        LocalTarget(tiny_llama, mode="telepathy")


# --- served models are cached by model identity, not by port (audit issue 19, item 4) ----------------------


def _fake_gguf(path, content: bytes):
    path.write_bytes(b"GGUF" + content * 1000)
    return path


@pytest.fixture
def llama_server_class(monkeypatch):
    """LlamaServer without llama-cpp-python installed (only its identity is used here: no server starts)."""
    import importlib.util

    from soft2hard import serving

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: object() if name == "llama_cpp" else real(name, *a))
    return serving.LlamaServer


def test_served_model_identity_ignores_port_and_location(tmp_path, llama_server_class):
    gguf = _fake_gguf(tmp_path / "m.gguf", b"weights")
    (tmp_path / "moved").mkdir()
    moved = _fake_gguf(tmp_path / "moved" / "m.gguf", b"weights")
    a, b = llama_server_class(gguf, port=41001, alias="m"), llama_server_class(moved, port=41002, alias="m")
    assert a.base_url != b.base_url and a.identity == b.identity
    (tmp_path / "other").mkdir()
    other = _fake_gguf(tmp_path / "other" / "m.gguf", b"weightz")
    assert llama_server_class(other, port=41001, alias="m").identity != a.identity  # another model file
    assert llama_server_class(gguf, port=41001, alias="m", n_ctx=512).identity != a.identity  # other settings


def test_a_rerun_on_a_new_port_sends_no_request_for_cached_prompts(tmp_path, llama_server_class):
    gguf = _fake_gguf(tmp_path / "m.gguf", b"weights")
    prompts = ["Input: cat\nOutput:", "Input: dog\nOutput:", "Input: tree\nOutput:"]
    first_server, rerun_server = llama_server_class(gguf, alias="m"), llama_server_class(gguf, alias="m")
    assert first_server.port != rerun_server.port  # each server picks a free port

    def api(server):
        return APITarget(server.base_url, "m", cache_path=tmp_path / "c.sqlite", identity=server.identity,
                         max_retries=0)

    first = api(first_server)
    first._send = lambda req: f"answer to {req['prompt'].split()[1]}"
    assert first.complete(prompts, max_tokens=4) == ["answer to cat", "answer to dog", "answer to tree"]
    assert first.stats.requests == 3

    rerun = api(rerun_server)
    rerun._send = lambda req: pytest.fail(f"request sent again: {req}")
    assert rerun.complete(prompts, max_tokens=4) == ["answer to cat", "answer to dog", "answer to tree"]
    assert rerun.stats.requests == 0 and rerun.stats.cache_hits == 3
    # without the identity the URL is the key, and the port alone made every request a miss
    plain = [APITarget(s.base_url, "m").request(prompts[0], 4, ("\n",)) for s in (first_server, rerun_server)]
    assert plain[0] != plain[1]


def test_evaluate_serve_gives_the_api_target_the_servers_identity(tmp_path, monkeypatch):
    from soft2hard import serving
    from soft2hard.cli import build_parser
    from soft2hard.cli import evaluate as cli_evaluate

    class FakeServer:
        def __init__(self, gguf, log=None, alias=None, **kw):
            self.base_url, self.alias, self.identity = "http://127.0.0.1:41003/v1", alias, f"llama.cpp/{gguf}"

        def start(self):
            return self

        def stop(self):
            stopped.append(self)

    stopped = []
    monkeypatch.setattr(serving, "LlamaServer", FakeServer)
    monkeypatch.setattr(serving, "gguf_path", lambda model, cache_dir=None: f"{model}.gguf")
    args = build_parser().parse_args(["evaluate", "--tasks", "gen/plural", "--out", str(tmp_path), "--target",
                                      "none", "--serve", "gemma3-270m"])
    local, api_options = cli_evaluate.targets_options()
    with open_targets(TargetsConfig(**local.values(args), **api_options.values(args)), tmp_path) as (api,):
        assert api.target.identity == "llama.cpp/gemma3-270m.gguf"
        assert api.target.request("x", 2, ())["endpoint"].startswith("llama.cpp/gemma3-270m.gguf/")
        assert not stopped
    assert len(stopped) == 1  # the server is stopped on leaving the block


def test_targets_config_checks_its_combinations():
    with pytest.raises(Soft2HardError, match="--serve or --base-url, not both"):
        TargetsConfig(serve="gemma3-270m", base_url="http://127.0.0.1:1/v1")
    for half in ({"base_url": "http://127.0.0.1:1/v1"}, {"api_model": "m"}):
        with pytest.raises(Soft2HardError, match="needs both --base-url and --api-model"):
            TargetsConfig(**half)
    with pytest.raises(Soft2HardError, match="api_mode must be one of auto, completion, chat"):
        TargetsConfig(api_mode="json")
    assert "secret" not in repr(TargetsConfig(api_key="secret"))


def test_open_targets_builds_lazily_and_stops_its_server_on_error(tmp_path, monkeypatch):
    from soft2hard import models, serving

    loads, events = [], []
    monkeypatch.setattr(models, "load_model", lambda name, **kw: loads.append((name, kw)) or FakeLM(name))

    class FakeServer:
        def __init__(self, gguf, log=None, alias=None, **kw):
            self.base_url, self.alias, self.identity, self.log = "http://127.0.0.1:41004/v1", alias, "id", log

        def start(self):
            events.append("start")
            return self

        def stop(self):
            events.append("stop")

    monkeypatch.setattr(serving, "LlamaServer", FakeServer)
    monkeypatch.setattr(serving, "gguf_path", lambda model, cache_dir=None: f"{model}.gguf")
    cfg = TargetsConfig(target="some/model", serve="gemma3-270m", api_cache=tmp_path / "c.sqlite")
    with pytest.raises(RuntimeError), open_targets(cfg, tmp_path, load={"device": "cpu"}) as targets:
        assert [t.name for t in targets] == ["local:some/model", "api:gemma3-270m"]
        assert events == ["start"] and not loads  # nothing is loaded before a completion needs it
        assert targets[0].target.lm.name == "some/model" and loads == [("some/model", {"cache_dir": None,
                                                                                      "device": "cpu"})]
        assert targets[1].target.cache is not None and targets[1].target.identity == "id"
        raise RuntimeError("an evaluation fails")
    assert events == ["start", "stop"]
    with open_targets(TargetsConfig(target="none"), tmp_path) as targets:
        assert targets == []


class FakeLM:
    def __init__(self, name):
        self.name, self.tokenizer = name, type("Tok", (), {"chat_template": None})()
