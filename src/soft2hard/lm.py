"""LanguageModel: a thin wrapper over a frozen HF causal LM + tokenizer.

All architecture differences live here: where the decoder and its block list are, the embedding multiplier
(Gemma scales token embeddings by sqrt(d) inside its embedding module), logit soft-capping, BOS handling.

Sequence layout, the same as PEFT prompt tuning: ``[soft prompt (n)] [tokenizer(context) incl. BOS if the
tokenizer adds one] [target tokens]``. The soft prompt is in the *scaled* embedding space, i.e. it is
concatenated with ``get_input_embeddings()(ids)`` as is.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from soft2hard.errors import Soft2HardError


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

    @property
    def embed_scale(self) -> float:
        scale = getattr(self.model.get_input_embeddings(), "embed_scale", 1.0)
        return float(scale.item() if torch.is_tensor(scale) else scale)

    @property
    def pad_id(self) -> int:
        tok = self.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        return int(pad if pad is not None else 0)

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
    def hidden_states(self, embeds: torch.Tensor, mask: torch.Tensor, **kwargs):
        """Decoder forward on input embeddings; returns the model output (last_hidden_state, ...)."""
        positions = (mask.long().cumsum(-1) - 1).clamp(min=0)  # correct for left padding too
        with self.autocast():
            return self.decoder(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, **kwargs)

    def logits_from_hidden(self, hidden: torch.Tensor) -> torch.Tensor:
        """Apply the LM head (and Gemma-style soft-capping) to selected hidden states. (..., D) -> (..., V)"""
        with self.autocast():
            logits = self.model.get_output_embeddings()(hidden)
        logits = logits.float()
        cap = getattr(self.config, "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return logits

    def build_batch(self, prompt: torch.Tensor | None, contexts: list[str], targets: list[str] | None = None,
                    left_pad: bool = False):
        """Embed ``[prompt][context][target]`` rows, padded to one length.

        Returns (embeds (B,T,D), mask (B,T), target_ids list[list[int]], target_start list[int]) where
        target_start[b] is the index of the first target token of row b.
        """
        rows = []
        for i, ctx in enumerate(contexts):
            ctx_ids = self.encode(ctx)
            tgt_ids = self.encode(targets[i], special=False) if targets is not None else []
            rows.append((ctx_ids, tgt_ids))
        n = 0 if prompt is None else prompt.shape[0]
        lengths = [len(c) + len(t) for c, t in rows]
        T = n + max(lengths)
        B = len(rows)
        ids = torch.full((B, T - n), self.pad_id, dtype=torch.long)
        mask = torch.zeros(B, T, dtype=torch.long)
        target_start = []
        for b, (c, t) in enumerate(rows):
            seq = c + t
            offset = (T - n - len(seq)) if left_pad else 0
            ids[b, offset:offset + len(seq)] = torch.tensor(seq, dtype=torch.long)
            if left_pad:
                mask[b, offset:offset + n + len(seq)] = 1  # [pad][prompt][seq]
            else:
                mask[b, : n + len(seq)] = 1
            target_start.append(offset + n + len(c))
        embeds = self.embed(ids)  # (B, T-n, D)
        if prompt is not None:
            p = prompt.to(embeds.dtype).to(self.device).unsqueeze(0).expand(B, -1, -1)
            if left_pad:
                # put the prompt right after each row's padding
                out = torch.empty(B, T, embeds.shape[-1], dtype=embeds.dtype, device=embeds.device)
                for b, (c, t) in enumerate(rows):
                    pad = T - n - len(c) - len(t)
                    out[b, :pad] = embeds[b, :pad]
                    out[b, pad:pad + n] = p[b]
                    out[b, pad + n:] = embeds[b, pad:]
                embeds = out
            else:
                embeds = torch.cat([p, embeds], dim=1)
        return embeds, mask.to(self.device), [t for _, t in rows], target_start

    def target_logprobs(self, prompt: torch.Tensor | None, contexts: list[str], targets: list[str]
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed log-probability of each target given prompt + context, and its token count.

        The LM head runs only at the positions that predict target tokens (the vocabulary projection is the
        largest matmul for a small model). Differentiable wrt ``prompt``. Returns ((B,), (B,)).
        """
        embeds, mask, tgt_ids, starts = self.build_batch(prompt, contexts, targets)
        hidden = self.hidden_states(embeds, mask).last_hidden_state  # (B, T, D)
        rows, cols, labels = [], [], []
        for b, (ids, s) in enumerate(zip(tgt_ids, starts)):
            if not ids:
                raise Soft2HardError(f"target {targets[b]!r} tokenizes to nothing; targets must be non-empty")
            rows += [b] * len(ids)
            cols += [s + j - 1 for j in range(len(ids))]  # position s+j-1 predicts target token j
            labels += ids
        dev = hidden.device
        rows_t = torch.tensor(rows, device=dev)
        picked = hidden[rows_t, torch.tensor(cols, device=dev)]  # (N, D)
        logp = F.log_softmax(self.logits_from_hidden(picked), dim=-1)  # (N, V)
        tok_lp = logp.gather(1, torch.tensor(labels, device=dev)[:, None]).squeeze(1)  # (N,)
        total = torch.zeros(len(contexts), device=dev).index_add(0, rows_t, tok_lp)
        counts = torch.zeros(len(contexts), device=dev).index_add(0, rows_t, torch.ones_like(tok_lp))
        return total, counts

    @torch.no_grad()
    def generate(self, prompt: torch.Tensor | None, contexts: list[str], max_new_tokens: int = 20,
                 stop: tuple[str, ...] = ("\n",)) -> list[str]:
        """Greedy decoding with a KV cache; returns the text generated after each context, cut at ``stop``."""
        embeds, mask, _, _ = self.build_batch(prompt, contexts, None, left_pad=True)
        B = embeds.shape[0]
        out = self.hidden_states(embeds, mask, use_cache=True)
        cache = out.past_key_values
        next_tok = self.logits_from_hidden(out.last_hidden_state[:, -1]).argmax(-1)  # (B,)
        generated = [[] for _ in range(B)]
        done = [False] * B
        eos = self.tokenizer.eos_token_id
        for _ in range(max_new_tokens):
            for b in range(B):
                if not done[b]:
                    tok = int(next_tok[b])
                    if tok == eos:
                        done[b] = True
                    else:
                        generated[b].append(tok)
                        if any(s in self.decode(generated[b]) for s in stop):
                            done[b] = True
            if all(done):
                break
            mask = torch.cat([mask, torch.ones(B, 1, dtype=mask.dtype, device=mask.device)], dim=1)
            positions = mask.long().sum(-1, keepdim=True) - 1
            with self.autocast():
                out = self.decoder(input_ids=next_tok[:, None], attention_mask=mask, position_ids=positions,
                                   past_key_values=cache, use_cache=True)
            cache = out.past_key_values
            next_tok = self.logits_from_hidden(out.last_hidden_state[:, -1]).argmax(-1)
        texts = []
        for ids in generated:
            text = self.decode(ids)
            for s in stop:
                text = text.split(s)[0]
            texts.append(text)
        return texts
