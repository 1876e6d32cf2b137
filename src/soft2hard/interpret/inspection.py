"""InSPEcT: describe a soft prompt by patching its hidden states into an inspection prompt (a Patchscope).

1. Source pass: the model reads the soft prompt alone (as the first n positions, exactly as in training; or,
   like the official code, as the output of block 0 over n placeholder tokens); we keep the output of every
   block at the n positions.
2. Target prompt: few-shot ``"<description>: <labels>"`` demos joined by ``" | "``, then ``" | "`` and n
   placeholder tokens.
3. For a (source s, target t) pair the output of block t at placeholder i is replaced by the source state of
   block s at prompt position i, and the model continues greedily; the text after the placeholders is the
   description (cut at a newline, ``|`` or EOS).

Fast path: all pairs of a grid run as rows of one batch. The demos are the same in every row and come before
the placeholders, so they are run once and their KV cache is shared; the patch is applied only in the pass over
the placeholders (their states never change afterwards, so this equals the official re-patch-every-step loop);
decoding uses the KV cache and drops finished rows.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from soft2hard.errors import Soft2HardError
from soft2hard.hooks import hooked
from soft2hard.interpret.base import Description
from soft2hard.lm import LanguageModel

logger = logging.getLogger(__name__)

# Our own demo set. Keep it disjoint from every task that descriptions are evaluated on (generated tasks and
# the BIG-bench tasks used in docs/): a small model tends to copy a demo, and a shared demo would look like a hit.
DEMOS: tuple[tuple[str, str], ...] = (
    ("Identify the emotion expressed in this text", "joy, sadness, anger, fear"),
    ("Identify the type of this email", "spam, not spam"),
    ("Classify the topic of the news article", "sports, politics, business, science"),
    ("Decide whether the review recommends the restaurant", "recommended, not recommended"),
    ("Translate the English word into French", "French word"),
    ("Name the capital city of the given country", "city name"),
    ("Tell whether the two sentences mean the same thing", "paraphrase, different"),
    ("Detect the language of the sentence", "English, Spanish, German, Italian"),
    ("Label the grammatical person of the pronoun", "first, second, third"),
    ("Decide if the statement about the image is true", "true, false"),
)
STOP_STRINGS = ("\n", "|")
INJECT_MODES = ("input", "block0")


@dataclass
class InspectConfig:
    # help: the field's documentation, also the CLI option's help (soft2hard.cli.common.ConfigOptions)
    source_layers: Sequence[int] | None = field(default=None, metadata={
        "help": "blocks whose output is read (default 1..L-1)"})
    target_layers: Sequence[int] | None = field(default=None, metadata={
        "help": "blocks whose output is overwritten (default 1..L-1)"})
    n_demos: int = field(default=4, metadata={"help": "demos in the inspection prompt"})
    demo_seed: int = field(default=0, metadata={
        "help": "which demos, in which order (the official code did not seed this)"})
    demos: Sequence[tuple[str, str]] = field(default_factory=lambda: DEMOS, metadata={
        "help": "(description, labels) pairs the demos are drawn from"})
    placeholder: str = field(default=" x", metadata={"help": "the placeholder token (must be one token)"})
    max_new_tokens: int = field(default=60, metadata={"help": "length of each generated description"})
    inject: str = field(default="input", metadata={
        "help": "source pass: prompt as input embeddings (as trained) or as block 0's output (official code)"})
    batch_size: int = field(default=96, metadata={"help": "layer pairs per batch"})

    def __post_init__(self) -> None:
        if self.inject not in INJECT_MODES:
            raise Soft2HardError(f"inject must be one of {', '.join(INJECT_MODES)}, got {self.inject!r}")
        if not 1 <= self.n_demos <= len(self.demos):
            raise Soft2HardError(f"n_demos must be between 1 and {len(self.demos)}, got {self.n_demos}")
        if self.max_new_tokens < 1 or self.batch_size < 1:
            raise Soft2HardError("max_new_tokens and batch_size must be >= 1")

    def grid(self, n_layers: int) -> list[tuple[int, int]]:
        sources = list(self.source_layers) if self.source_layers is not None else list(range(1, n_layers))
        targets = list(self.target_layers) if self.target_layers is not None else list(range(1, n_layers))
        for layer in sources + targets:
            if not 0 <= layer < n_layers:
                raise Soft2HardError(f"layer {layer} is out of range: the model has blocks 0..{n_layers - 1}")
        pairs = [(s, t) for s in sources for t in targets]
        if not pairs:
            raise Soft2HardError("the layer grid is empty: give at least one source and one target layer")
        return pairs


def chosen_demos(cfg: InspectConfig) -> list[tuple[str, str]]:
    demos = list(cfg.demos)
    random.Random(cfg.demo_seed).shuffle(demos)
    return demos[: cfg.n_demos]


def inspection_prompt(lm: LanguageModel, cfg: InspectConfig, n: int) -> tuple[list[int], int]:
    """Token ids of the target prompt and the index of the first of its n placeholders."""
    text = " | ".join(f"{d}: {labels}" for d, labels in chosen_demos(cfg)) + " |"
    ph = lm.encode(cfg.placeholder, special=False)
    if len(ph) != 1:
        raise Soft2HardError(f"placeholder {cfg.placeholder!r} is {len(ph)} tokens for this tokenizer; use one token")
    prefix = lm.encode(text)
    return prefix + ph * n, len(prefix)


@torch.no_grad()
def source_states(lm: LanguageModel, prompt: torch.Tensor, inject: str = "input") -> torch.Tensor:
    """Output of every block at the n prompt positions. Returns (L, n, D)."""
    lm.check_prompt(prompt)
    names = lm.block_names()
    n = prompt.shape[0]
    states: dict[int, torch.Tensor] = {}

    def keep(t, *, name):
        states[names.index(name[: -len(".output")])] = t[0, -n:].float().clone()

    hooks = {f"{b}.output": keep for b in names}
    p = prompt.to(lm.device, lm.weight_dtype)
    if inject == "block0":
        # the official code: run n placeholder tokens and overwrite block 0's output with the prompt
        hooks[f"{names[0]}.output"] = lambda t, *, name: _replace_tail(t, p, n)
        embeds = lm.embed(torch.tensor([lm.encode(" x", special=False)[:1] * n]))
    else:
        embeds = p[None]
    mask = torch.ones(1, embeds.shape[1], dtype=torch.long, device=lm.device)
    with hooked(lm.model, hooks):
        lm.forward_embeds(embeds, mask)
    if inject == "block0":
        states[0] = prompt.float().to(lm.device)
    return torch.stack([states[i] for i in range(len(names))])


def _replace_tail(t: torch.Tensor, p: torch.Tensor, n: int) -> torch.Tensor:
    t = t.clone()
    t[0, -n:] = p.to(t.dtype)
    return t


def _stop(text: str) -> bool:
    return any(s in text for s in STOP_STRINGS)


def _clean(text: str) -> str:
    for s in STOP_STRINGS:
        text = text.split(s)[0]
    return text.strip()


@torch.no_grad()
def inspect_grid(lm: LanguageModel, prompt: torch.Tensor, cfg: InspectConfig | None = None,
                 pairs: Sequence[tuple[int, int]] | None = None, progress: bool = False) -> list[Description]:
    """Describe ``prompt`` with every (source, target) pair of the grid; batched, KV-cached."""
    cfg = cfg or InspectConfig()
    names = lm.block_names()
    pairs = list(pairs) if pairs is not None else cfg.grid(len(names))
    for s, t in pairs:
        if not (0 <= s < len(names) and 0 <= t < len(names)):
            raise Soft2HardError(f"layer pair ({s}, {t}) is out of range: the model has blocks 0..{len(names) - 1}")
    n = prompt.shape[0]
    states = source_states(lm, prompt, cfg.inject)  # (L, n, D)
    ids, start = inspection_prompt(lm, cfg, n)
    prefix = torch.tensor([ids[:start]], device=lm.device)
    placeholders = torch.tensor([ids[start:]], device=lm.device)
    prefix_cache = lm.cache_of(lm.forward_embeds(lm.embed(prefix), torch.ones_like(prefix), use_cache=True))  # once
    texts: dict[tuple[int, int], str] = {}
    bar = tqdm(total=len(pairs), desc="inspect", disable=not progress, dynamic_ncols=True)
    for i in range(0, len(pairs), cfg.batch_size):
        chunk = pairs[i:i + cfg.batch_size]
        for pair, text in zip(chunk, _run_chunk(lm, cfg, states, names, prefix_cache, start, placeholders, chunk)):
            texts[pair] = text
        bar.update(len(chunk))
    bar.close()
    return [Description(text=texts[p], method="inspect", layers=p) for p in pairs]


def _patched_prefill(lm, states, names, prefix_cache, start, placeholders, chunk):
    """The pass over the placeholders with block t's output overwritten by source states of block s, one row per
    (s, t) pair of ``chunk``; returns (output with its KV cache, attention mask)."""
    B, n = len(chunk), placeholders.shape[1]
    cache = lm.repeat_cache(prefix_cache, B)
    source = states[torch.tensor([s for s, _ in chunk])]  # (B, n, D)
    by_target: dict[int, list[int]] = {}
    for row, (_, t) in enumerate(chunk):
        by_target.setdefault(t, []).append(row)

    def patch(hidden, *, name):
        rows = by_target[names.index(name[: -len(".output")])]
        hidden = hidden.clone()
        hidden[rows, -n:] = source[rows].to(hidden.dtype)
        return hidden

    hooks = {f"{names[t]}.output": patch for t in by_target}
    mask = torch.ones(B, start + n, dtype=torch.long, device=lm.device)
    with hooked(lm.model, hooks):
        out = lm.extend(placeholders.expand(B, -1), mask, cache)
    return out, mask


def _run_chunk(lm, cfg, states, names, prefix_cache, start, placeholders, chunk) -> list[str]:
    out, mask = _patched_prefill(lm, states, names, prefix_cache, start, placeholders, chunk)
    return [text.strip() for text in lm.greedy_continue(out, mask, cfg.max_new_tokens, STOP_STRINGS)]


@torch.no_grad()
def continuation_logprobs(lm: LanguageModel, prompt: torch.Tensor, cfg: InspectConfig, context: str, target: str,
                          pairs: Sequence[tuple[int, int]] | None = None) -> list[tuple[tuple[int, int], float]]:
    """log P(``target`` | inspection prompt patched with (s, t), then ``context``) for each pair: a graded
    reading of what the patched model would say, defined even when greedy decoding never says it."""
    names = lm.block_names()
    pairs = list(pairs) if pairs is not None else cfg.grid(len(names))
    n = prompt.shape[0]
    states = source_states(lm, prompt, cfg.inject)
    ids, start = inspection_prompt(lm, cfg, n)
    prefix = torch.tensor([ids[:start]], device=lm.device)
    placeholders = torch.tensor([ids[start:]], device=lm.device)
    prefix_cache = lm.cache_of(lm.forward_embeds(lm.embed(prefix), torch.ones_like(prefix), use_cache=True))
    ctx, tgt = lm.encode(context, special=False), lm.encode(target, special=False)
    if not tgt:
        raise Soft2HardError(f"target {target!r} tokenizes to nothing")
    forced = torch.tensor([ctx + tgt], device=lm.device)
    result = []
    for i in range(0, len(pairs), cfg.batch_size):
        chunk = pairs[i:i + cfg.batch_size]
        out, mask = _patched_prefill(lm, states, names, prefix_cache, start, placeholders, chunk)
        B, L = len(chunk), forced.shape[1]
        mask = torch.cat([mask, torch.ones(B, L, dtype=mask.dtype, device=mask.device)], dim=1)
        nxt = lm.extend(forced.expand(B, -1), mask, lm.cache_of(out))
        hidden = torch.cat([out.last_hidden_state[:, -1:], nxt.last_hidden_state], dim=1)  # [j] predicts forced[j]
        logp = lm.logits_from_hidden(hidden[:, len(ctx):len(ctx) + len(tgt)]).log_softmax(-1)
        scores = logp.gather(2, torch.tensor(tgt, device=lm.device).expand(B, -1)[..., None]).squeeze(-1).sum(-1)
        result += list(zip(chunk, scores.tolist()))
    return result
