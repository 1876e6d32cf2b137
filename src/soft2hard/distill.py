"""Context distillation: compress a text prompt into a soft prompt.

Teacher: the frozen model given ``teacher_prompt`` before each input. Student: the same model given the soft
prompt in its place. The loss is KL(teacher || student) over the next-token distributions at the answer
positions, teacher-forced on the task's targets or on the teacher's own greedy continuations (no labels needed).
Every distilled prompt comes with its exact ground-truth text.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from soft2hard.lm import LanguageModel
from soft2hard.scoring import GENERATION_STOP, normalize_answer
from soft2hard.tasks.base import Example, Task


def teacher_context(teacher_prompt: str, context: str) -> str:
    return f"{teacher_prompt}\n{context}"


def distill_loss(lm: LanguageModel, prompt: torch.Tensor | None, teacher_prompt: str, task: Task,
                 batch: Sequence[Example], targets: Sequence[str] | None = None, with_mask: bool = False):
    """Mean KL(teacher || student) per answer token. ``targets`` default to the task's training targets.

    With ``with_mask``, returns (loss, the student batch's mask (B, T), its number of target tokens): what a
    trainer counts as the tokens it ran."""
    contexts = [task.format_input(ex.input) for ex in batch]
    targets = list(targets) if targets is not None else [task.format_target(ex.target) for ex in batch]
    with torch.no_grad():
        teacher, _, _ = lm.target_logits(None, [teacher_context(teacher_prompt, c) for c in contexts], targets)
    student, labels, _, *mask = lm.target_logits(prompt, contexts, targets, with_mask=with_mask)
    t_logp = F.log_softmax(teacher.float(), dim=-1)  # (N, V)
    s_logp = F.log_softmax(student.float(), dim=-1)
    loss = F.kl_div(s_logp, t_logp, log_target=True, reduction="batchmean")
    return (loss, mask[0], labels.numel()) if with_mask else loss


@torch.no_grad()
def teacher_continuations(lm: LanguageModel, teacher_prompt: str, task: Task, examples: Sequence[Example],
                          max_new_tokens: int = 24, batch_size: int = 16) -> dict[str, str]:
    """input -> the teacher's greedy continuation (up to and including its newline), to teacher-force on.

    An empty continuation becomes the newline alone: the student learns to stop where the teacher stops."""
    out: dict[str, str] = {}
    todo = list(dict.fromkeys(ex.input for ex in examples))
    for i in range(0, len(todo), batch_size):
        chunk = todo[i:i + batch_size]
        texts = lm.generate(None, [teacher_context(teacher_prompt, task.format_input(x)) for x in chunk],
                            max_new_tokens, GENERATION_STOP)
        out.update({x: t + "\n" for x, t in zip(chunk, texts)})
    return out


@torch.no_grad()
def teacher_faithfulness(lm: LanguageModel, prompt: torch.Tensor | None, teacher_prompt: str, task: Task,
                         examples: Sequence[Example], batch_size: int = 16) -> dict[str, float]:
    """Agreement of greedy outputs (teacher vs student) and mean per-token KL on ``examples``.

    ``prompt=None`` gives the no-prompt baseline (the model without the instruction)."""
    agree, kls = 0, []
    for i in range(0, len(examples), batch_size):
        chunk = list(examples[i:i + batch_size])
        contexts = [task.format_input(ex.input) for ex in chunk]
        longest = max(len(lm.encode(task.format_target(ex.target), special=False)) for ex in chunk) + 4
        t_out = lm.generate(None, [teacher_context(teacher_prompt, c) for c in contexts], longest, GENERATION_STOP)
        s_out = lm.generate(prompt, contexts, longest, GENERATION_STOP)
        agree += sum(normalize_answer(a) == normalize_answer(b) for a, b in zip(t_out, s_out))
        kls.append(float(distill_loss(lm, prompt, teacher_prompt, task, chunk)) * len(chunk))
    return {"agreement": agree / len(examples), "mean_kl": sum(kls) / len(examples)}
