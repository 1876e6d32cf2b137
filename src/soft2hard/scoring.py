"""Task scores of a (soft) prompt: accuracy by label ranking for classification, exact match for generation."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from soft2hard.lm import LanguageModel
from soft2hard.tasks.base import Example, Task

GENERATION_STOP = ("\n",)


def normalize_answer(text: str) -> str:
    return " ".join(text.strip().split())


@torch.no_grad()
def classify(lm: LanguageModel, prompt: torch.Tensor | None, task: Task, examples: Sequence[Example],
             batch_size: int = 16) -> list[str]:
    """Predict each example's label as the label with the highest summed log-probability."""
    assert task.labels is not None
    labels = list(task.labels)
    pairs = [(task.format_input(ex.input), task.format_target(lab)) for ex in examples for lab in labels]
    scores = []
    for i in range(0, len(pairs), batch_size):
        chunk = pairs[i:i + batch_size]
        total, _ = lm.target_logprobs(prompt, [c for c, _ in chunk], [t for _, t in chunk])
        scores.append(total.float().cpu())
    table = torch.cat(scores).view(len(examples), len(labels))  # (N, L)
    return [labels[j] for j in table.argmax(-1).tolist()]


@torch.no_grad()
def generate_answers(lm: LanguageModel, prompt: torch.Tensor | None, task: Task, examples: Sequence[Example],
                     batch_size: int = 16) -> list[str]:
    longest = max(len(lm.encode(task.format_target(ex.target), special=False)) for ex in examples)
    outputs: list[str] = []
    for i in range(0, len(examples), batch_size):
        chunk = examples[i:i + batch_size]
        outputs += lm.generate(prompt, [task.format_input(ex.input) for ex in chunk],
                               max_new_tokens=longest + 4, stop=GENERATION_STOP)
    return outputs


def score(lm: LanguageModel, prompt: torch.Tensor | None, task: Task, examples: Sequence[Example],
          batch_size: int = 16) -> float:
    """Accuracy (classification) or exact match after whitespace normalisation (generation), in [0, 1]."""
    if not examples:
        return float("nan")
    if task.kind == "classification":
        preds = classify(lm, prompt, task, examples, batch_size)
        return sum(p == ex.target for p, ex in zip(preds, examples)) / len(examples)
    outs = generate_answers(lm, prompt, task, examples, batch_size)
    return sum(normalize_answer(o) == normalize_answer(ex.target) for o, ex in zip(outs, examples)) / len(examples)
