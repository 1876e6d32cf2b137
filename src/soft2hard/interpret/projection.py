"""Vocabulary projection: the naive baseline reading of a soft prompt.

Each prompt vector maps to its nearest vocabulary embedding (cosine, as PEZ does, or L2), in the model's own
input space (Gemma's embeddings are compared after the sqrt(d) multiplier, where soft prompts live).
Prompt Waywardness (Khashabi et al. 2022) shows that a good prompt can project to arbitrary text: this is a
baseline, not an explanation, so the per-token similarity is reported to show how far the prompt is from words.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from soft2hard.errors import Soft2HardError
from soft2hard.interpret.base import Description
from soft2hard.lm import LanguageModel

METRICS = ("cosine", "l2")


@torch.no_grad()
def nearest_tokens(lm: LanguageModel, prompt: torch.Tensor, metric: str = "cosine") -> tuple[list[int], list[float]]:
    """Nearest vocabulary id per prompt row and its cosine similarity (or L2 distance)."""
    if metric not in METRICS:
        raise Soft2HardError(f"unknown projection metric {metric!r}; choose one of {', '.join(METRICS)}")
    lm.check_prompt(prompt)
    vocab = lm.vocab_embeddings().float()  # (V, D)
    p = prompt.to(vocab.device).float()  # (n, D)
    if metric == "cosine":
        sims = F.normalize(p, dim=-1) @ F.normalize(vocab, dim=-1).T  # (n, V)
        best = sims.max(dim=-1)
        return best.indices.tolist(), [round(v, 4) for v in best.values.tolist()]
    dists = torch.cdist(p[None], vocab[None])[0]  # (n, V)
    best = dists.min(dim=-1)
    return best.indices.tolist(), [round(v, 4) for v in best.values.tolist()]


def project(lm: LanguageModel, prompt: torch.Tensor, metric: str = "cosine") -> Description:
    ids, values = nearest_tokens(lm, prompt, metric)
    tokens = [lm.tokenizer.convert_ids_to_tokens(i) for i in ids]
    text = lm.tokenizer.decode(ids, skip_special_tokens=False)
    key = "cosine" if metric == "cosine" else "l2_distance"
    return Description(text=text, method="projection", details={"metric": metric, "token_ids": ids,
                                                                  "tokens": tokens, key: values})
