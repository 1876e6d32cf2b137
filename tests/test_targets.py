"""Targets and the SQLite response cache (the API server tests live in test_api_target.py)."""

import threading

import pytest

from soft2hard.cache import ResponseCache, request_key
from soft2hard.errors import Soft2HardError
from soft2hard.targets import APITarget, LocalTarget, is_chat_model_name


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
