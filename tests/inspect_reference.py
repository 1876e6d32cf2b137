"""InSPEcT written plainly from its description (METHODS.md section 3), as the reference the fast implementation
is tested against. It uses transformers and torch only, none of soft2hard's code: its own block lookup,
inspection prompt, source pass, torch forward hooks and greedy loop.

Per (source s, target t) pair: a fresh source pass caches block s's output at the n prompt positions; then
greedy decoding without a KV cache re-runs the whole sequence at every step, with a forward hook on block t that
overwrites its output at the n placeholder positions with those states each time (the official loop, minus its
bugs: the stop rule fires here).

``generate_inspect`` is the KV-cached version a user would write with transformers' own ``generate``: the same
per-pair source pass, then cached greedy decoding with the hook on block t overwriting the placeholders in the
prefill only (later steps only append one position; the placeholders' cached keys and values are already
patched). It is the fair per-pair baseline of bench/inspect.py.
"""

import random

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

STOPS = ("\n", "|")


def blocks(model) -> list[torch.nn.Module]:
    """The decoder blocks: the ModuleList with one entry per layer (``model.layers``, ``transformer.h``, ...)."""
    n = model.config.num_hidden_layers
    return next(m for m in model.modules() if isinstance(m, torch.nn.ModuleList) and len(m) == n)


def hidden_of(output) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output  # a tuple in older transformers


def with_hidden(output, hidden: torch.Tensor):
    return (hidden, *output[1:]) if isinstance(output, tuple) else hidden


def inspection_ids(tokenizer, cfg, n: int) -> tuple[list[int], int]:
    """``"<description>: <labels> | ... |"`` (seeded demo choice) with BOS, then n placeholder tokens."""
    demos = list(cfg.demos)
    random.Random(cfg.demo_seed).shuffle(demos)
    text = " | ".join(f"{d}: {labels}" for d, labels in demos[: cfg.n_demos]) + " |"
    prefix = tokenizer(text)["input_ids"]
    (placeholder,) = tokenizer(cfg.placeholder, add_special_tokens=False)["input_ids"]
    return list(prefix) + [placeholder] * n, len(prefix)


@torch.no_grad()
def source_states(model, tokenizer, prompt: torch.Tensor, layer: int, inject: str) -> torch.Tensor:
    """Block ``layer``'s output at the n prompt positions of a pass over the soft prompt alone. (n, D)

    ``inject="input"``: the prompt is the input embeddings (as in training). ``"block0"``: the official code's
    variant, n placeholder tokens whose block-0 output is overwritten by the prompt."""
    n = prompt.shape[0]
    if inject == "block0" and layer == 0:
        return prompt.float()
    kept = {}

    def keep(mod, args, output):  # returns None: observes only
        kept["h"] = hidden_of(output)[0].float().clone()

    handles = [blocks(model)[layer].register_forward_hook(keep)]
    if inject == "block0":
        def overwrite(mod, args, output):
            return with_hidden(output, prompt[None].to(hidden_of(output).dtype))
        handles.append(blocks(model)[0].register_forward_hook(overwrite))
        x = tokenizer(" x", add_special_tokens=False)["input_ids"][0]
        embeds = model.get_input_embeddings()(torch.tensor([[x] * n]))
    else:
        embeds = prompt[None].to(model.get_input_embeddings().weight.dtype)
    try:
        model(inputs_embeds=embeds, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return kept["h"]


def patched_logits(model, ids: list[int], start: int, states: torch.Tensor | None, t: int) -> torch.Tensor:
    """Logits of one uncached pass over ``ids`` with block t's output at the placeholders (``start`` ...) set to
    ``states`` (None: no patch). (T, V)"""
    n = 0 if states is None else states.shape[0]

    def overwrite(mod, args, output):
        hidden = hidden_of(output).clone()
        hidden[0, start:start + n] = states.to(hidden.dtype)
        return with_hidden(output, hidden)

    handle = blocks(model)[t].register_forward_hook(overwrite) if states is not None else None
    try:
        return model(input_ids=torch.tensor([ids]), use_cache=False).logits[0].float()
    finally:
        if handle is not None:
            handle.remove()


@torch.no_grad()
def reference_inspect(lm, prompt, cfg, pair, patch: bool = True) -> str:
    """The description of ``prompt`` from layer pair ``(s, t)`` (``patch=False``: the same loop unpatched).

    ``lm`` only supplies the HF model and tokenizer."""
    model, tokenizer = lm.model, lm.tokenizer
    s, t = pair
    states = source_states(model, tokenizer, prompt, s, cfg.inject) if patch else None
    ids, start = inspection_ids(tokenizer, cfg, prompt.shape[0])
    generated: list[int] = []
    for _ in range(cfg.max_new_tokens):
        tok = int(patched_logits(model, ids + generated, start, states, t)[-1].argmax())  # re-patched every step
        if tok == tokenizer.eos_token_id:
            break
        generated.append(tok)
        if any(stop in tokenizer.decode(generated, skip_special_tokens=True) for stop in STOPS):
            break
    text = tokenizer.decode(generated, skip_special_tokens=True)
    for stop in STOPS:
        text = text.split(stop)[0]
    return text.strip()


class _StopStrings(StoppingCriteria):
    """Stop a row once its new tokens decode to text containing a stop string (the loop above's rule)."""

    def __init__(self, tokenizer, start: int) -> None:
        self.tokenizer, self.start = tokenizer, start

    def __call__(self, input_ids, scores, **kwargs) -> torch.BoolTensor:
        done = [any(stop in self.tokenizer.decode(row[self.start:], skip_special_tokens=True) for stop in STOPS)
                for row in input_ids]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


@torch.no_grad()
def generate_inspect(lm, prompt, cfg, pair) -> str:
    """The description from ``pair`` by ``model.generate`` (KV-cached greedy decoding) with a patch hook."""
    model, tokenizer = lm.model, lm.tokenizer
    s, t = pair
    states = source_states(model, tokenizer, prompt, s, cfg.inject)  # (n, D), one source pass per pair
    n = states.shape[0]
    ids, start = inspection_ids(tokenizer, cfg, n)

    def overwrite(mod, args, output):
        hidden = hidden_of(output)
        if hidden.shape[1] < start + n:  # a decoding step (one new position): nothing to patch
            return None
        hidden = hidden.clone()
        hidden[0, start:start + n] = states.to(hidden.dtype)
        return with_hidden(output, hidden)

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    handle = blocks(model)[t].register_forward_hook(overwrite)
    try:
        out = model.generate(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                             max_new_tokens=cfg.max_new_tokens, do_sample=False, num_beams=1,
                             eos_token_id=tokenizer.eos_token_id, pad_token_id=pad, use_cache=True,
                             stopping_criteria=StoppingCriteriaList([_StopStrings(tokenizer, len(ids))]))
    finally:
        handle.remove()
    text = tokenizer.decode(out[0, len(ids):], skip_special_tokens=True)
    for stop in STOPS:
        text = text.split(stop)[0]
    return text.strip()


@torch.no_grad()
def reference_logprob(lm, prompt, cfg, pair, context: str, target: str, patch: bool = True) -> float:
    """log P(``target`` | inspection prompt patched with ``pair``, then ``context``), one uncached pass."""
    model, tokenizer = lm.model, lm.tokenizer
    s, t = pair
    states = source_states(model, tokenizer, prompt, s, cfg.inject) if patch else None
    ids, start = inspection_ids(tokenizer, cfg, prompt.shape[0])
    ctx = tokenizer(context, add_special_tokens=False)["input_ids"] if context else []
    tgt = tokenizer(target, add_special_tokens=False)["input_ids"]
    logp = patched_logits(model, ids + ctx + tgt, start, states, t).log_softmax(-1)
    first = len(ids) + len(ctx)  # logits at position j predict token j + 1
    return float(sum(logp[first + j - 1, tok] for j, tok in enumerate(tgt)))
