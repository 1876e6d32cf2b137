"""How good is a text interpretation of a soft prompt? Faithfulness and scrutability (Patel et al. 2025).

* **Faithfulness**: does the text make the model behave like the soft prompt? For classification, compare
  the model's distributions over the label set with the soft prompt and with the text before each input
  (agreement of the argmax labels, mean KL(soft || text)); for generation, agreement of greedy outputs and the
  mean per-token KL teacher-forced on the task targets (``distill.teacher_faithfulness``, with the text as the teacher).
* **Scrutability**: can a reader follow the text? Proxied by its perplexity under a reference LM (lower reads
  better), the share of dictionary-like words, and flags for degenerate prompts (repeated tokens, special
  tokens, non-words) that a perplexity objective can collapse to.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import torch

from soft2hard.distill import teacher_context, teacher_faithfulness
from soft2hard.lm import LanguageModel
from soft2hard.tasks.base import Example, Task

_WORD = re.compile(r"[A-Za-z]+(?:'[a-z]+)?")
_VOWELS = set("aeiouy")


@torch.no_grad()
def label_distributions(lm: LanguageModel, task: Task, examples: Sequence[Example], prompt: torch.Tensor | None = None,
                        text: str | None = None, batch_size: int = 16, shared_context: bool = False) -> torch.Tensor:
    """(N, L) probabilities over the task's labels, given a soft prompt, a text before the input, or neither.

    ``shared_context``: run each context once and continue every label from its KV cache
    (:func:`label_logprobs`) instead of one full pass per (context, label): about L times fewer tokens, the
    same numbers up to float rounding (left-padded batches instead of right-padded ones)."""
    assert task.labels is not None, "label distributions need a classification task"
    labels = list(task.labels)
    contexts = [task.format_input(ex.input) for ex in examples]
    if text is not None:
        contexts = [teacher_context(text, c) for c in contexts]
    targets = [task.format_target(lab) for lab in labels]
    if shared_context:
        scores = [label_logprobs(lm, prompt, contexts[i:i + batch_size], targets)
                  for i in range(0, len(contexts), batch_size)]
        return torch.cat(scores).softmax(-1)
    pairs = [(c, t) for c in contexts for t in targets]
    scores = []
    for i in range(0, len(pairs), batch_size):
        chunk = pairs[i:i + batch_size]
        total, _ = lm.target_logprobs(prompt, [c for c, _ in chunk], [t for _, t in chunk])
        scores.append(total.float().cpu())
    return torch.cat(scores).view(len(examples), len(labels)).softmax(-1)


@torch.no_grad()
def label_logprobs(lm: LanguageModel, prompt: torch.Tensor | None, contexts: list[str],
                   targets: list[str]) -> torch.Tensor:
    """(B, L) summed log-probability of each target after each context (the soft prompt first, if any).

    The contexts run once, left-padded with a KV cache; the first target token is read off the last position,
    and the rest of the targets continue from copies of the cache, grouped by token length (a cache extension
    takes no padding)."""
    embeds, mask, _, _ = lm.build_batch(contexts, None, left_pad=True)
    out, full = lm.forward_text(prompt, embeds, mask, use_cache=True, left_padded=True)
    first = lm.logits_from_hidden(out.last_hidden_state[:, -1]).log_softmax(-1)  # (B, V)
    ids = [lm.encode(t, special=False) for t in targets]
    if any(not i for i in ids):
        raise ValueError("every target must tokenize to at least one token")
    scores = first[:, [i[0] for i in ids]]  # (B, L), a copy (list indexing)
    B = len(contexts)
    for length in sorted({len(i) for i in ids if len(i) > 1}):
        group = [j for j, i in enumerate(ids) if len(i) == length]
        g = len(group)
        cache = lm.repeat_cache(lm.cache_of(out), g)  # row b*g + k continues context b with target group[k]
        tokens = torch.tensor([ids[j] for j in group], device=full.device)  # (g, length)
        feed = tokens[:, :-1].repeat(B, 1)  # (B*g, length-1)
        ext = torch.cat([full.repeat_interleave(g, 0), torch.ones_like(feed)], dim=1)
        hidden = lm.extend(feed, ext, cache).last_hidden_state  # (B*g, length-1, D)
        logp = lm.logits_from_hidden(hidden).log_softmax(-1)
        rest = logp.gather(2, tokens[:, 1:].repeat(B, 1)[..., None]).squeeze(2).sum(1)  # (B*g,)
        scores[:, group] += rest.view(B, g)
    return scores.float().cpu()


def faithfulness(lm: LanguageModel, prompt: torch.Tensor, text: str, task: Task, examples: Sequence[Example],
                 batch_size: int = 16) -> dict[str, float]:
    """Agreement and mean KL between the model with the soft prompt and the model with ``text`` instead."""
    if task.labels is None:
        return teacher_faithfulness(lm, prompt, text, task, examples, batch_size)  # text = teacher, soft prompt = student
    p = label_distributions(lm, task, examples, prompt=prompt, batch_size=batch_size)
    q = label_distributions(lm, task, examples, text=text, batch_size=batch_size)
    return compare_label_distributions(p, q)


def compare_label_distributions(p: torch.Tensor, q: torch.Tensor) -> dict[str, float]:
    """Agreement of the argmax labels and mean KL(p || q) of two (N, L) label distributions."""
    kl = (p * (p.clamp_min(1e-12).log() - q.clamp_min(1e-12).log())).sum(-1)
    return {"agreement": float((p.argmax(-1) == q.argmax(-1)).float().mean()), "mean_kl": float(kl.mean())}


@torch.no_grad()
def log_perplexity(lm: LanguageModel, ids: torch.Tensor) -> torch.Tensor:
    """Mean next-token NLL of each row of ``ids`` (S, k), the first token given BOS. Returns (S,) on the CPU."""
    seq = torch.cat([torch.full((ids.shape[0], 1), lm.bos_id, dtype=torch.long), ids.cpu()], 1).to(lm.device)
    out = lm.forward_embeds(lm.embed(seq), torch.ones_like(seq))
    logits = lm.logits_from_hidden(out.last_hidden_state[:, :-1])  # (S, k, V)
    return -logits.log_softmax(-1).gather(2, seq[:, 1:, None]).squeeze(2).mean(1).float().cpu()


def perplexity(lm: LanguageModel, text: str) -> float:
    """exp(mean next-token NLL) of ``text`` under ``lm`` (each token given BOS/previous tokens)."""
    ids = lm.encode(text, special=False)
    if not ids:
        return float("inf")
    return math.exp(float(log_perplexity(lm, torch.tensor([ids]))[0]))


def word_validity(text: str, vocabulary: set[str] | None = None) -> float:
    """Share of whitespace-separated chunks that look like words: letters only, with a vowel, no run of 5
    consonants (or, when ``vocabulary`` is given, present in it). 0.0 for a text with no chunks."""
    chunks = text.split()
    if not chunks:
        return 0.0

    def ok(chunk: str) -> bool:
        word = chunk.strip(".,;:!?\"'()[]").lower()
        if not word or not _WORD.fullmatch(word):
            return False
        if vocabulary is not None:
            return word in vocabulary
        return bool(_VOWELS & set(word)) and not re.search(r"[^aeiouy']{5}", word)

    return sum(ok(c) for c in chunks) / len(chunks)


def degenerate_flags(lm: LanguageModel, ids: Sequence[int], text: str, min_validity: float = 0.5) -> list[str]:
    """Why a hard prompt looks degenerate: 'repeated' (one token fills half or more), 'special' (a special
    token), 'non-words' (fewer than ``min_validity`` of its chunks look like words). Empty when it looks fine."""
    flags = []
    if ids and max(ids.count(i) for i in set(ids)) * 2 >= len(ids) and len(ids) > 1:
        flags.append("repeated")
    if set(ids) & lm.special_ids:
        flags.append("special")
    if word_validity(text) < min_validity:
        flags.append("non-words")
    return flags


def scrutability(lm: LanguageModel, text: str, ids: Sequence[int] | None = None) -> dict:
    """Perplexity, word validity and degeneracy flags of a text prompt, in one dict (a results-table cell)."""
    ids = list(ids) if ids is not None else lm.encode(text, special=False)
    return {"perplexity": perplexity(lm, text), "word_validity": word_validity(text),
            "degenerate": degenerate_flags(lm, ids, text)}
