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
    if task.answer_type == "classification":
        preds = classify(lm, prompt, task, examples, batch_size)
        return sum(p == ex.target for p, ex in zip(preds, examples)) / len(examples)
    outs = generate_answers(lm, prompt, task, examples, batch_size)
    return sum(normalize_answer(o) == normalize_answer(ex.target) for o, ex in zip(outs, examples)) / len(examples)


@torch.no_grad()
def score_many(lm: LanguageModel, prompts: torch.Tensor | None,
               items: Sequence[tuple[int | None, Task, Sequence[Example]]], batch_size: int = 64) -> list[float]:
    """:func:`score` for many (prompt index, task, examples) items in shared passes (a pack of jobs).

    ``prompts`` is (K, n, D); an item's index picks its prompt, ``None`` scores it without one. Rows of every
    item are pooled (items without a prompt in passes of their own) and cut into batches of ``batch_size``;
    a row's result depends on other rows only through padding, i.e. within float rounding.
    """
    cls_rows: list[tuple[int | None, int, str, str]] = []  # (prompt, item, context, target)
    gen_rows: list[tuple[int | None, int, str, int, int]] = []  # (prompt, item, context, max new tokens, order)
    for i, (p, task, examples) in enumerate(items):
        if task.answer_type == "classification":
            cls_rows += [(p, i, task.format_input(ex.input), task.format_target(lab))
                         for ex in examples for lab in task.labels]
        elif examples:
            longest = max(len(lm.encode(task.format_target(ex.target), special=False)) for ex in examples)
            gen_rows += [(p, i, task.format_input(ex.input), longest + 4, j) for j, ex in enumerate(examples)]
    logprobs: dict[int, list[float]] = {}
    answers: dict[int, list[tuple[int, str]]] = {}
    for with_prompt in (True, False):
        rows = [r for r in cls_rows if (r[0] is not None) == with_prompt]
        for k in range(0, len(rows), batch_size):
            chunk = rows[k:k + batch_size]
            total, _ = lm.target_logprobs(prompts if with_prompt else None, [r[2] for r in chunk],
                                          [r[3] for r in chunk], _row_index(chunk, with_prompt))
            for r, value in zip(chunk, total.float().cpu().tolist()):
                logprobs.setdefault(r[1], []).append(value)
        rows = sorted((r for r in gen_rows if (r[0] is not None) == with_prompt), key=lambda r: len(r[2]))
        for k in range(0, len(rows), batch_size):
            chunk = rows[k:k + batch_size]
            texts = lm.generate(prompts if with_prompt else None, [r[2] for r in chunk], [r[3] for r in chunk],
                                GENERATION_STOP, _row_index(chunk, with_prompt))
            for r, text in zip(chunk, texts):
                answers.setdefault(r[1], []).append((r[4], text))
    scores = []
    for i, (_, task, examples) in enumerate(items):
        if not examples:
            scores.append(float("nan"))
        elif task.answer_type == "classification":
            table = torch.tensor(logprobs[i]).view(len(examples), len(task.labels))
            preds = [task.labels[j] for j in table.argmax(-1).tolist()]
            scores.append(sum(p == ex.target for p, ex in zip(preds, examples)) / len(examples))
        else:
            outs = [t for _, t in sorted(answers[i])]
            scores.append(sum(normalize_answer(o) == normalize_answer(ex.target)
                              for o, ex in zip(outs, examples)) / len(examples))
    return scores


def _row_index(chunk, with_prompt: bool) -> torch.Tensor | None:
    return torch.tensor([r[0] for r in chunk], dtype=torch.long) if with_prompt else None
