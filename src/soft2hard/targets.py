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
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
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


class LazyTarget:
    """A target that is built (a model loaded, a client opened) only when a completion is first needed."""

    def __init__(self, name: str, make: Callable[[], object]) -> None:
        self.name, self._make, self._target = name, make, None

    @property
    def target(self):
        if self._target is None:
            self._target = self._make()
        return self._target

    def complete(self, prompts: list[str], max_tokens: int, stop: tuple[str, ...]) -> list[str]:
        return self.target.complete(prompts, max_tokens=max_tokens, stop=stop)

    def traffic(self) -> str | None:
        """What an API target sent this run, for the log (None for a local or never-built target): a rerun of a
        finished or interrupted evaluation shows here that only the missing requests went out."""
        stats = getattr(self._target, "stats", None)
        if stats is None:
            return None
        return (f"{self.name}: {stats.requests} requests sent ({stats.retries} retries), "
                f"{stats.cache_hits} answered from the cache")


@dataclass(frozen=True)
class TargetsConfig:
    """Where the text prompts are deployed: a local model and/or an OpenAI-compatible API, either one already
    running (``base_url`` + ``api_model``) or llama.cpp's server started for a built-in model (``serve``)."""

    # help: the field's documentation, also the CLI option's help (soft2hard.cli.common.ConfigOptions)
    target: str | None = field(default="gemma3-270m", metadata={
        "help": "local target model (built-in, directory or HF id); 'none' for no local target"})
    target_mode: str = field(default="auto", metadata={"help": "the local target's prompt format"})
    base_url: str | None = field(default=None, metadata={
        "help": "an OpenAI-compatible API, e.g. http://127.0.0.1:8000/v1"})
    api_model: str | None = field(default=None, metadata={"help": "the model name the API serves"})
    api_key: str | None = field(default=None, repr=False, metadata={
        "help": "API key (default $OPENAI_API_KEY; never logged or cached)"})
    api_mode: str = field(default="auto", metadata={
        "help": "auto: chat for instruction models (by name), completions otherwise"})
    serve: str | None = field(default=None, metadata={
        "help": "start llama.cpp's server for a built-in model on 127.0.0.1 and use it as the API target"})
    concurrency: int = field(default=4, metadata={"help": "API requests in flight"})
    max_retries: int = field(default=4, metadata={"help": "retries of a failed API request"})
    timeout: float = field(default=60.0, metadata={"help": "seconds per API request"})
    api_cache: Path | None = field(default=None, metadata={
        "help": "SQLite response cache (default OUT/api_cache.sqlite)"})

    def __post_init__(self) -> None:
        for name in ("target_mode", "api_mode"):
            if getattr(self, name) not in MODES:
                raise Soft2HardError(f"{name} must be one of {', '.join(MODES)}, got {getattr(self, name)!r}")
        if self.serve and self.base_url:
            raise Soft2HardError("use --serve or --base-url, not both")
        if not self.serve and bool(self.base_url) != bool(self.api_model):
            raise Soft2HardError("an API target needs both --base-url and --api-model")


@contextmanager
def open_targets(cfg: TargetsConfig, out: Path, cache_dir: Path | None = None,
                 load: Mapping | None = None) -> Iterator[list[LazyTarget]]:
    """The targets ``cfg`` names, each built on first use; the server ``cfg.serve`` asks for is started now and
    stopped on leaving the block, error or not.

    Args:
        out: the evaluation folder (the server's log, the default API cache).
        load: ``load_model`` keyword arguments for the local target (device, dtype, amp).
    """
    from soft2hard.models import canonical_model_name

    targets, server = [], None
    if cfg.target and cfg.target.lower() != "none":
        name = canonical_model_name(cfg.target)

        def make_local() -> LocalTarget:
            from soft2hard.models import load_model

            return LocalTarget(load_model(name, **{"cache_dir": cache_dir, **(load or {})}), mode=cfg.target_mode)

        targets.append(LazyTarget(f"local:{name}", make_local))
    base_url, api_model, identity = cfg.base_url, cfg.api_model, None
    try:
        if cfg.serve:
            from soft2hard.serving import LlamaServer, gguf_path

            alias = canonical_model_name(cfg.serve)
            server = LlamaServer(gguf_path(alias, cache_dir), log=Path(out) / "server.log", alias=alias)
            server = server.start()
            base_url, api_model, identity = server.base_url, api_model or server.alias, server.identity
        if base_url and api_model:

            def make_api() -> APITarget:
                return APITarget(base_url, api_model, api_key=cfg.api_key, mode=cfg.api_mode,
                                 cache_path=cfg.api_cache or Path(out) / "api_cache.sqlite",
                                 concurrency=cfg.concurrency, max_retries=cfg.max_retries, timeout=cfg.timeout,
                                 identity=identity)

            targets.append(LazyTarget(f"api:{api_model}", make_api))
        yield targets
    finally:
        for t in targets:
            if t.traffic():
                logger.info("%s", t.traffic())
        if server is not None:
            server.stop()
