"""Where text prompts are deployed: a local causal LM, or any OpenAI-compatible API.

Both implement ``complete(prompts, max_tokens, stop) -> texts`` with greedy decoding (temperature 0).
* ``LocalTarget`` runs a built-in or HF model in-process; models with a chat template get the prompt as a user
  message (``mode="auto"``), base models get it as plain text.
* ``APITarget`` uses the official ``openai`` client: ``/v1/completions`` for base models, ``/v1/chat/completions``
  for instruction models (``mode="auto"`` decides from the model name; override with ``mode``), bounded
  concurrency, retries with exponential backoff on 429 / 5xx / timeouts / dropped connections / malformed 200
  answers, a request timeout, and a SQLite response cache (``cache.ResponseCache``) consulted before every
  request. The API key comes from ``OPENAI_API_KEY`` or the caller and is never logged, cached or written anywhere.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from soft2hard.cache import ResponseCache
from soft2hard.errors import Soft2HardError

logger = logging.getLogger(__name__)
MODES = ("auto", "completion", "chat")
CHAT_HINTS = ("instruct", "chat", "-it", "gpt-", "assistant")


def is_chat_model_name(model: str) -> bool:
    name = model.lower()
    return any(h in name for h in CHAT_HINTS)


class LocalTarget:
    """Greedy completions from an in-process model (``soft2hard.models.load_model``)."""

    def __init__(self, lm, mode: str = "auto") -> None:
        if mode not in MODES:
            raise Soft2HardError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.lm, self.name = lm, f"local:{lm.name}"
        has_template = bool(getattr(lm.tokenizer, "chat_template", None))
        self.chat = has_template if mode == "auto" else mode == "chat"
        if self.chat and not has_template:
            raise Soft2HardError(f"{lm.name} has no chat template; use mode 'completion'")

    def format(self, prompt: str) -> str:
        if not self.chat:
            return prompt
        return self.lm.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                     add_generation_prompt=True)

    def complete(self, prompts: list[str], max_tokens: int = 32, stop: tuple[str, ...] = ("\n",),
                 batch_size: int = 8) -> list[str]:
        out: list[str] = []
        for i in range(0, len(prompts), batch_size):
            chunk = [self.format(p) for p in prompts[i:i + batch_size]]
            out += self.lm.generate(None, chunk, max_new_tokens=max_tokens, stop=stop)
        return out


class MalformedResponseError(Exception):
    """A 200 answer whose body is not a completion (not JSON, or no choice): a server or proxy glitch, retried."""


@dataclass
class APIStats:
    requests: int = 0  # HTTP requests sent (retries included)
    cache_hits: int = 0
    retries: int = 0
    failures: list[str] = field(default_factory=list)


class APITarget:
    """An OpenAI-compatible endpoint with a response cache, retries and bounded concurrency."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None, mode: str = "auto",
                 cache_path: str | Path | None = None, concurrency: int = 4, max_retries: int = 4,
                 timeout: float = 60.0, backoff: float = 0.5, identity: str | None = None) -> None:
        """``identity`` stands for the endpoint in the cache key (e.g. ``LlamaServer.identity``: a local server
        on a new port serves the same answers); the default is the URL itself."""
        import openai

        if mode not in MODES:
            raise Soft2HardError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if concurrency < 1 or max_retries < 0 or timeout <= 0:
            raise Soft2HardError("concurrency must be >= 1, max_retries >= 0 and timeout > 0")
        self.base_url, self.model = base_url.rstrip("/"), model
        self.identity = identity or self.base_url
        self.name = f"api:{model}"
        self.chat = is_chat_model_name(model) if mode == "auto" else mode == "chat"
        key = api_key or os.environ.get("OPENAI_API_KEY") or "not-needed"  # local servers ignore it
        self._client = openai.OpenAI(base_url=self.base_url, api_key=key, timeout=timeout, max_retries=0)
        self._openai = openai
        self.cache = ResponseCache(cache_path) if cache_path else None
        self.concurrency, self.max_retries, self.backoff = concurrency, max_retries, backoff
        self.stats = APIStats()

    def request(self, prompt: str, max_tokens: int, stop: tuple[str, ...]) -> dict:
        """What identifies a response (the cache key): never includes the API key."""
        body = {"messages": [{"role": "user", "content": prompt}]} if self.chat else {"prompt": prompt}
        return {"endpoint": self.identity + ("/chat/completions" if self.chat else "/completions"),
                "model": self.model, **body, "max_tokens": max_tokens, "temperature": 0.0, "stop": list(stop)}

    def _send(self, req: dict) -> str:
        params = {k: v for k, v in req.items() if k not in ("endpoint",)}
        api = self._client.chat.completions if self.chat else self._client.completions
        try:
            resp = api.create(**params)
        except json.JSONDecodeError as err:  # the client parses a 200 body without wrapping its errors
            raise MalformedResponseError(f"the response is not JSON ({err})") from None
        try:
            text = resp.choices[0].message.content if self.chat else resp.choices[0].text
        except (AttributeError, IndexError, TypeError):
            raise MalformedResponseError("the response holds no completion choice") from None
        if text is not None and not isinstance(text, str):
            raise MalformedResponseError("the response's completion is not text")
        return text or ""

    def _retryable(self, err: Exception) -> bool:
        o = self._openai
        if isinstance(err, (MalformedResponseError, o.APITimeoutError, o.APIConnectionError, o.RateLimitError)):
            return True
        return isinstance(err, o.APIStatusError) and err.status_code >= 500

    def _complete_one(self, req: dict) -> str:
        if self.cache is not None:
            hit = self.cache.get(req)
            if hit is not None:
                self.stats.cache_hits += 1
                return hit
        for attempt in range(self.max_retries + 1):
            self.stats.requests += 1
            try:
                text = self._send(req)
                break
            except Exception as err:  # the openai client raises many types; only some are worth a retry
                if not isinstance(err, (self._openai.OpenAIError, MalformedResponseError)):
                    raise
                if not self._retryable(err) or attempt == self.max_retries:
                    detail = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
                    raise Soft2HardError(f"{self.base_url}: request failed after {attempt + 1} attempt(s): "
                                         f"{type(err).__name__}: {detail}") from None
                self.stats.retries += 1
                delay = self.backoff * (2 ** attempt) * (1 + random.random() * 0.25)
                logger.info("%s: %s, retrying in %.1f s", self.base_url, type(err).__name__, delay)
                time.sleep(delay)
        if self.cache is not None:
            self.cache.put(req, text)
        return text

    def complete(self, prompts: list[str], max_tokens: int = 32, stop: tuple[str, ...] = ("\n",)) -> list[str]:
        reqs = [self.request(p, max_tokens, stop) for p in prompts]
        pool = ThreadPoolExecutor(max_workers=self.concurrency)
        try:
            texts = list(pool.map(self._complete_one, reqs))
        finally:  # on Ctrl-C or an error, drop the queued requests instead of sending them all first
            pool.shutdown(wait=True, cancel_futures=True)
        return [_cut(t, stop) for t in texts]


def _cut(text: str, stop: tuple[str, ...]) -> str:
    for s in stop:
        text = text.split(s)[0]
    return text
