"""LanguageModel: a thin wrapper over a frozen HF causal LM + tokenizer.

All architecture differences live here: where the decoder and its block list are, the embedding multiplier
(Gemma scales token embeddings by sqrt(d) inside its embedding module), logit soft-capping, BOS handling, the
layers LoRA adapts (:meth:`LanguageModel.lora_target_modules`).

Sequence layout, the same as PEFT prompt tuning: ``[soft prompt (n)] [tokenizer(context) incl. BOS if the
tokenizer adds one] [target tokens]``. The soft prompt is in the *scaled* embedding space, i.e. it is
concatenated with ``get_input_embeddings()(ids)`` as is.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import inspect
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from soft2hard.errors import Soft2HardError


@functools.cache
def _cache_argument(decoder_type: type) -> str:
    """The decoder's KV-cache argument: transformers renamed ``past_key_values`` to ``cache`` (the old name warns
    and is due to go in 5.40); earlier 5.x releases know only the old one."""
    return "cache" if "cache" in inspect.signature(decoder_type.forward).parameters else "past_key_values"


@dataclass
class LanguageModel:
    model: torch.nn.Module
    tokenizer: object
    name: str
    amp_dtype: torch.dtype | None = None  # autocast compute dtype (bf16 is the fast path on AMX CPUs)
    _vocab_cache: torch.Tensor | None = field(default=None, repr=False)

    # ------------------------------------------------------------------ architecture facts
    @property
    def config(self):
        return self.model.config

    @property
    def device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    @property
    def d_model(self) -> int:
        return self.model.get_input_embeddings().weight.shape[1]

    @property
    def decoder(self) -> torch.nn.Module:
        return getattr(self.model, self.model.base_model_prefix)

    def lora_target_modules(self) -> list[str]:
        """Leaf names of the weight layers in the first decoder block, in order, for PEFT LoRA (which matches them
        by suffix in every block): ``q_proj`` ... ``down_proj`` for Llama, Gemma and Qwen2; ``c_attn``, ``c_proj``,
        ``c_fc`` for GPT-2, whose projections are transformers' ``Conv1D``."""
        from transformers.pytorch_utils import Conv1D

        block = self.model.get_submodule(self.block_names()[0])
        names: list[str] = []
        for path, module in block.named_modules():
            if "lora_" in path or "base_layer" in path:  # LoRA already applied: count the wrapped layer once
                continue
            leaf = path.rpartition(".")[2]
            layer = getattr(module, "base_layer", module)
            if isinstance(layer, torch.nn.Linear | Conv1D) and leaf not in names:
                names.append(leaf)
        if not names:
            raise Soft2HardError(f"{self.name}: no Linear or Conv1D layers in its first decoder block to put LoRA on")
        return names

    def block_names(self) -> list[str]:
        """Dotted paths of the decoder blocks, in order (``model.layers.0`` ...), whatever the architecture calls
        them: the names :func:`soft2hard.hooks.hooked` takes (``<block>.output``)."""
        n_layers = getattr(self.config, "num_hidden_layers", None)
        for name, module in self.model.named_modules():
            if isinstance(module, torch.nn.ModuleList) and len(module) == n_layers and n_layers:
                return [f"{name}.{i}" for i in range(len(module))]
        raise Soft2HardError(f"could not find the list of {n_layers} decoder blocks in {type(self.model).__name__}")

    @property
    def weight_dtype(self) -> torch.dtype:
        """The dtype of the model's weights (and of its input embeddings)."""
        return self.model.get_input_embeddings().weight.dtype

    @property
    def compute_dtype(self) -> torch.dtype:
        """The dtype matmuls run in: the autocast dtype when there is one, else the weights'."""
        return self.amp_dtype or self.weight_dtype

    @property
    def special_ids(self) -> frozenset[int]:
        """Ids of the tokenizer's special tokens (BOS, EOS, pad, ...): never part of a text prompt."""
        return frozenset(int(i) for i in self.tokenizer.all_special_ids)

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        """The model's parameters that require grad: none, for the frozen model every method assumes."""
        return [p for p in self.model.parameters() if p.requires_grad]

    @property
    def embed_scale(self) -> float:
        scale = getattr(self.model.get_input_embeddings(), "embed_scale", 1.0)
        return float(scale.item() if torch.is_tensor(scale) else scale)

    @property
    def pad_id(self) -> int:
        tok = self.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        return int(pad if pad is not None else 0)

    @property
    def bos_id(self) -> int:
        """The token a free-standing sequence starts from: BOS, or EOS for tokenizers without a BOS."""
        bos = self.tokenizer.bos_token_id
        return int(bos if bos is not None else self.tokenizer.eos_token_id)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids -> input embeddings, embedding multiplier included. (..., T) -> (..., T, D)"""
        return self.model.get_input_embeddings()(ids.to(self.device))

    def vocab_embeddings(self) -> torch.Tensor:
        """The vocabulary matrix in the same (scaled) space as soft prompts. (V, D)"""
        if self._vocab_cache is None:
            w = self.model.get_input_embeddings().weight.detach()
            self._vocab_cache = w * self.embed_scale if self.embed_scale != 1.0 else w
        return self._vocab_cache

    def check_prompt(self, prompt: torch.Tensor) -> None:
        if prompt.ndim != 2 or prompt.shape[1] != self.d_model:
            raise Soft2HardError(
                f"soft prompt has shape {tuple(prompt.shape)} but model {self.name!r} needs [n, {self.d_model}]"
            )

    @contextlib.contextmanager
    def attention(self, implementation: str | None):
        """Run attention with ``implementation`` ("eager", "sdpa", ...) inside the block; None keeps the model's.

        On a CPU, eager attention is about 2x faster than SDPA's kernel for the short rows of prompt tuning
        (docs/BENCHMARKS.md); both compute the same attention up to float rounding."""
        before = self.config._attn_implementation
        if implementation is None or implementation == before:
            yield
            return
        self.model.set_attn_implementation(implementation)
        try:
            yield
        finally:
            self.model.set_attn_implementation(before)

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    # ------------------------------------------------------------------ tokenisation
    def encode(self, text: str, special: bool = True) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=special)["input_ids"])

    def decode(self, ids) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    # ------------------------------------------------------------------ forward passes
    def prefix_cache(self, prompt: torch.Tensor, batch: int, rows: torch.Tensor | None = None):
        """Run the soft prompt alone once and return its KV cache, one copy per batch row.

        The prompt comes first and attention is causal, so its hidden states are the same in every row: one
        pass over n positions replaces B passes (prompt tokens are often most of a short training sequence).
        Gradients flow through the cached keys/values back to the prompt. ``prompt`` is one (n, D) prompt shared
        by ``batch`` rows, or K prompts (K, n, D) with ``rows`` (B,) naming each row's prompt (a pack of jobs:
        each prompt still runs once, and a row's gradient reaches only its own prompt).
        """
        if prompt.ndim == 2:
            prompt = prompt.unsqueeze(0)
        k, n = prompt.shape[:2]
        dtype = self.model.get_input_embeddings().weight.dtype
        p = prompt.to(device=self.device, dtype=dtype)  # (K, n, D); differentiable cast
        with self.autocast():
            out = self.decoder(inputs_embeds=p,
                               attention_mask=torch.ones(k, n, dtype=torch.long, device=self.device),
                               position_ids=torch.arange(n, device=self.device)[None].expand(k, n),
                               use_cache=True)
        cache = self.cache_of(out)
        if rows is not None:
            cache.batch_select_indices(rows.to(self.device))
        elif batch > 1:
            cache.batch_repeat_interleave(batch)
        return cache

    @property
    def has_sliding_window(self) -> bool:
        return bool(getattr(self.config, "sliding_window", None))

    def forward_text(self, prompt: torch.Tensor | None, embeds: torch.Tensor, mask: torch.Tensor,
                     use_cache: bool = False, left_padded: bool = False, rows: torch.Tensor | None = None):
        """Decoder forward over text embeddings (B, T, D) that follow an optional soft prompt (n, D), or
        one of K prompts (K, n, D) per row as ``rows`` (B,) says.

        Equivalent to one pass over ``[prompt][text]`` (PEFT's layout). Returns (output, full_mask):
        ``output.last_hidden_state`` covers the T text positions only; ``full_mask`` (B, n+T) is the attention
        mask over prompt + text, for continuing with the returned cache.
        """
        B = embeds.shape[0]
        n = 0 if prompt is None else prompt.shape[-2]
        ones = torch.ones(B, n, dtype=mask.dtype, device=mask.device)
        if prompt is not None and left_padded and self.has_sliding_window:
            # Sliding-window masks count cache slots, so pads between prompt and text would stretch distances:
            # put the prompt after each row's padding instead ([pad][prompt][text]) and run it per row.
            p = prompt.to(device=self.device, dtype=embeds.dtype)
            per_row = [p] * B if rows is None else [p[int(r)] for r in rows]
            pads = (mask == 0).sum(-1).tolist()
            embeds = torch.stack([torch.cat([e[:k], q, e[k:]]) for e, q, k in zip(embeds, per_row, pads)])
            full = torch.stack([torch.cat([m[:k], o, m[k:]]) for m, o, k in zip(mask, ones, pads)])
            out = self.forward_embeds(embeds, full, use_cache)
            out.last_hidden_state = out.last_hidden_state[:, n:]  # pads + prompt first: the text is the tail
            return out, full
        kwargs = {}
        full = mask
        if prompt is not None:
            kwargs[_cache_argument(type(self.decoder))] = self.prefix_cache(prompt, B, rows)
            full = torch.cat([ones, mask], dim=1)
            use_cache = True
        positions = n + (mask.long().cumsum(-1) - 1).clamp(min=0)
        with self.autocast():
            out = self.decoder(inputs_embeds=embeds, attention_mask=full, position_ids=positions,
                               use_cache=use_cache, **kwargs)
        return out, full

    def forward_embeds(self, embeds: torch.Tensor, mask: torch.Tensor, use_cache: bool = False):
        """The decoder (no LM head) on input embeddings (B, T, D) with attention mask (B, T); positions count the
        unmasked tokens, so left padding is position-free. Returns the decoder's output (``last_hidden_state``,
        and the KV cache with ``use_cache``)."""
        positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
        with self.autocast():
            return self.decoder(inputs_embeds=embeds, attention_mask=mask, position_ids=positions,
                                use_cache=use_cache)

    def extend(self, ids: torch.Tensor, mask: torch.Tensor, cache):
        """Run token ids (B, T) after a KV cache; ``mask`` (B, past + T) covers the cached and the new tokens.
        The new tokens' positions follow each row's unmasked count. Returns the decoder's output with the
        extended cache (the given one is extended in place, as transformers does)."""
        T = ids.shape[1]
        positions = mask.long().sum(-1, keepdim=True) - T + torch.arange(T, device=mask.device)
        with self.autocast():
            return self.decoder(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                                **{_cache_argument(type(self.decoder)): cache})

    @staticmethod
    def repeat_cache(cache, batch: int):
        """A copy of a KV cache with every row repeated ``batch`` times in place (row b becomes rows
        b*batch .. b*batch + batch-1); the original is untouched."""
        new = copy.deepcopy(cache)
        new.batch_repeat_interleave(batch)
        return new

    @staticmethod
    def cache_of(output):
        """The KV cache of a decoder output made with ``use_cache`` (``cache`` or, before the rename,
        ``past_key_values``)."""
        return output.cache if "cache" in getattr(output, "__dataclass_fields__", {}) else output.past_key_values

    def logits_from_hidden(self, hidden: torch.Tensor) -> torch.Tensor:
        """Apply the LM head (and Gemma-style soft-capping) to selected hidden states. (..., D) -> (..., V)"""
        with self.autocast():
            logits = self.model.get_output_embeddings()(hidden)
        logits = logits.float()
        cap = getattr(self.config, "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return logits

    def build_batch(self, contexts: list[str], targets: list[str] | None = None, left_pad: bool = False):
        """Embed ``[context][target]`` rows (the soft prompt is handled by :meth:`forward_text`).

        Returns (embeds (B,T,D), mask (B,T), target_ids list[list[int]], target_start list[int]) where
        target_start[b] is the text index of the first target token of row b.
        """
        rows = []
        for i, ctx in enumerate(contexts):
            tgt = self.encode(targets[i], special=False) if targets is not None else []
            rows.append((self.encode(ctx), tgt))
        T = max(len(c) + len(t) for c, t in rows)
        ids = torch.full((len(rows), T), self.pad_id, dtype=torch.long)
        mask = torch.zeros(len(rows), T, dtype=torch.long)
        target_start = []
        for b, (c, t) in enumerate(rows):
            seq = c + t
            offset = T - len(seq) if left_pad else 0
            ids[b, offset:offset + len(seq)] = torch.tensor(seq, dtype=torch.long)
            mask[b, offset:offset + len(seq)] = 1
            target_start.append(offset + len(c))
        return self.embed(ids), mask.to(self.device), [t for _, t in rows], target_start

    def target_logits(self, prompt: torch.Tensor | None, contexts: list[str], targets: list[str],
                      rows: torch.Tensor | None = None, with_mask: bool = False) -> tuple[torch.Tensor, ...]:
        """Logits at the positions that predict each target token (LM head only there); ``rows`` as in
        :meth:`forward_text`.

        Returns (logits (N, V), labels (N,), row (N,)) over all N target tokens of the batch, in order; with
        ``with_mask`` also the batch's mask (B, T) over context + target tokens (what a trainer counts).
        """
        embeds, mask, tgt_ids, starts = self.build_batch(contexts, targets)
        hidden = self.forward_text(prompt, embeds, mask, rows=rows)[0].last_hidden_state  # (B, T, D)
        picked_rows, cols, labels = [], [], []
        for b, (ids, s) in enumerate(zip(tgt_ids, starts)):
            if not ids:
                raise Soft2HardError(f"target {targets[b]!r} tokenizes to nothing; targets must be non-empty")
            if s == 0:
                raise Soft2HardError("a context must tokenize to at least one token")
            picked_rows += [b] * len(ids)
            cols += [s + j - 1 for j in range(len(ids))]  # text position s+j-1 predicts target token j
            labels += ids
        dev = hidden.device
        rows_t = torch.tensor(picked_rows, device=dev)
        picked = hidden[rows_t, torch.tensor(cols, device=dev)]  # (N, D)
        out = self.logits_from_hidden(picked), torch.tensor(labels, device=dev), rows_t
        return (*out, mask) if with_mask else out

    def target_logprobs(self, prompt: torch.Tensor | None, contexts: list[str], targets: list[str],
                        rows: torch.Tensor | None = None, with_mask: bool = False) -> tuple[torch.Tensor, ...]:
        """Summed log-probability of each target given prompt + context, and its token count.

        Differentiable wrt ``prompt``. Returns ((B,), (B,)), and the batch's mask with ``with_mask`` (as
        :meth:`target_logits`).
        """
        logits, labels, row, *mask = self.target_logits(prompt, contexts, targets, rows, with_mask)
        tok_lp = F.log_softmax(logits, dim=-1).gather(1, labels[:, None]).squeeze(1)  # (N,)
        total = torch.zeros(len(contexts), device=logits.device).index_add(0, row, tok_lp)
        counts = torch.zeros(len(contexts), device=logits.device).index_add(0, row, torch.ones_like(tok_lp))
        return (total, counts, *mask)

    @torch.no_grad()
    def generate(self, prompt: torch.Tensor | None, contexts: list[str], max_new_tokens: int | list[int] = 20,
                 stop: tuple[str, ...] = ("\n",), rows: torch.Tensor | None = None) -> list[str]:
        """Greedy decoding with a KV cache; returns the text generated after each context, cut at ``stop``.

        ``rows`` picks one of K prompts per context (see :meth:`forward_text`); ``max_new_tokens`` may be given
        per context."""
        embeds, mask, _, _ = self.build_batch(contexts, None, left_pad=True)
        out, mask = self.forward_text(prompt, embeds, mask, use_cache=True, left_padded=True, rows=rows)
        return self.greedy_continue(out, mask, max_new_tokens, stop)

    @torch.no_grad()
    def generate_embeds(self, embeds: torch.Tensor, mask: torch.Tensor, max_new_tokens: int, *, num_beams: int = 1,
                        num_return_sequences: int = 1, sample: bool = False, temperature: float = 1.0,
                        top_p: float = 1.0, seed: int | None = None, stop: tuple[str, ...] = ("\n",)) -> list[str]:
        """Beam search or seeded sampling from left-padded input embeddings (B, T, D) with transformers'
        ``generate``; ``num_return_sequences`` texts per row, row by row, each cut before the first stop string.
        :meth:`greedy_continue` is the greedy path (the one :meth:`generate` takes)."""
        if seed is not None:
            torch.manual_seed(seed)  # transformers samples with torch's global generator
        with self.autocast():
            ids = self.model.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=max_new_tokens,
                                      num_beams=num_beams, num_return_sequences=num_return_sequences,
                                      do_sample=sample, temperature=temperature if sample else None,
                                      top_p=top_p if sample else None, top_k=None,
                                      pad_token_id=self.pad_id, eos_token_id=self.tokenizer.eos_token_id)
        return [_cut(self.decode(row), stop) for row in ids.tolist()]  # with inputs_embeds: the new tokens only

    @torch.no_grad()
    def greedy_continue(self, out, mask: torch.Tensor, max_new_tokens: int | list[int],
                        stop: tuple[str, ...]) -> list[str]:
        """Greedy decoding from a prefilled forward output (its cache, full attention mask (B, T)).

        Rows leave the batch when they emit EOS, a stop string or their own ``max_new_tokens`` (an int for all
        rows, or one per row). Returns texts cut before the first stop string.
        """
        B = mask.shape[0]
        limits = [max_new_tokens] * B if isinstance(max_new_tokens, int) else list(max_new_tokens)
        max_new_tokens = max(limits, default=0)
        cache = self.cache_of(out)
        next_tok = self.logits_from_hidden(out.last_hidden_state[:, -1]).argmax(-1)  # (B,)
        generated: list[list[int]] = [[] for _ in range(B)]
        alive = list(range(B))  # the original row of each cache row
        eos = self.tokenizer.eos_token_id
        for _ in range(max_new_tokens):
            keep = []
            for j, row in enumerate(alive):
                tok = int(next_tok[j])
                if tok == eos:
                    continue
                generated[row].append(tok)
                if len(generated[row]) < limits[row] and not any(s in self.decode(generated[row]) for s in stop):
                    keep.append(j)
            if not keep:
                break
            if len(keep) < len(alive):
                idx = torch.tensor(keep, device=mask.device)
                cache.batch_select_indices(idx)
                mask, next_tok = mask[idx], next_tok[idx]
                alive = [alive[j] for j in keep]
            mask = torch.cat([mask, torch.ones(len(alive), 1, dtype=mask.dtype, device=mask.device)], dim=1)
            out = self.extend(next_tok[:, None], mask, cache)  # positions: prompt + real tokens so far
            cache = self.cache_of(out)
            next_tok = self.logits_from_hidden(out.last_hidden_state[:, -1]).argmax(-1)
        return [_cut(self.decode(ids), stop) for ids in generated]


def _cut(text: str, stop: tuple[str, ...]) -> str:
    """``text`` before the first of the stop strings."""
    for s in stop:
        text = text.split(s)[0]
    return text
