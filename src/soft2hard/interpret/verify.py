"""Translations checked on the source model before they are returned.

A text is a faithful translation of a soft prompt when, put before the inputs, it makes the source model behave
as the soft prompt does. The user has all it takes to check that: the soft prompt, the source model and some
unlabelled inputs. :func:`verify` scores every candidate text that way (and the empty text, the baseline any
instruction must beat), ranks them, and says whether the best one beats no text at all.

Faithfulness on unlabelled inputs (METHODS.md section 8):
- classification: the model's distribution over the label set with the soft prompt vs with the text before the
  input: agreement of the argmax labels, mean KL(soft || text);
- generation: agreement of the greedy outputs, and the mean per-token KL(text || soft) teacher-forced on the soft
  prompt's own greedy outputs and their newline (no labels needed).
Ranked by agreement, then by lower KL. The soft prompt's side is computed once; all texts share the passes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace

import torch
import torch.nn.functional as F

from soft2hard.distill import teacher_context
from soft2hard.faithfulness import compare_label_distributions, label_distributions
from soft2hard.lm import LanguageModel
from soft2hard.scoring import GENERATION_STOP, normalize_answer, score
from soft2hard.tasks.base import Example, Task

logger = logging.getLogger(__name__)
EMPTY = "empty"  # the origin of the empty text


@dataclass
class ScoredText:
    """A candidate text and how faithful it is to the soft prompt on the selection inputs."""

    text: str
    origin: str  # translator:greedy:instruction | translator:beam:1 | translator:sample:3 | inspect | empty
    agreement: float = 0.0
    mean_kl: float = float("inf")
    accuracy: float | None = None  # on labelled examples, when asked for
    details: dict = field(default_factory=dict)

    @property
    def key(self) -> tuple[float, float]:
        """Sort key, best first: higher agreement, then lower KL."""
        return (-self.agreement, self.mean_kl)


@dataclass
class Verdict:
    """The ranked candidates of one prompt; ``verified``: the best is more faithful than the empty text."""

    best: ScoredText
    ranked: list[ScoredText]
    empty: ScoredText
    verified: bool
    n_inputs: int
    seconds: float

    def to_dict(self) -> dict:
        return {"text": self.best.text, "origin": self.best.origin, "verified": self.verified,
                "agreement": self.best.agreement, "mean_kl": self.best.mean_kl, "accuracy": self.best.accuracy,
                "empty": asdict(self.empty), "n_inputs": self.n_inputs, "seconds": round(self.seconds, 2),
                "ranked": [asdict(c) for c in self.ranked]}


def with_instruction(task: Task, text: str) -> Task:
    """``task`` with ``text`` on the line before each input (as the evaluation's targets see an instruction)."""
    if not text:
        return task
    return replace(task, template=text.replace("{", "{{").replace("}", "}}") + "\n" + task.template)


def unlabelled(examples: Sequence[Example]) -> list[Example]:
    """The inputs of ``examples`` without their targets (what selection may look at)."""
    return [Example(input=ex.input, target="") for ex in examples]


@torch.no_grad()
def faithfulness_many(lm: LanguageModel, prompt: torch.Tensor, texts: Sequence[str], task: Task,
                      inputs: Sequence[Example], batch_size: int = 16, max_new_tokens: int = 24
                      ) -> list[dict[str, float]]:
    """Faithfulness of each text to ``prompt`` on ``inputs`` (their targets are never read): one dict
    (agreement, mean_kl) per text, in order. Classification needs ``task.labels``."""
    inputs = list(inputs)
    if task.labels is not None:
        p = label_distributions(lm, task, inputs, prompt=prompt, batch_size=batch_size)
        return [compare_label_distributions(p, label_distributions(lm, task, inputs, text=t or None,
                                                                   batch_size=batch_size)) for t in texts]
    contexts = [task.format_input(ex.input) for ex in inputs]
    soft: list[str] = []
    for i in range(0, len(contexts), batch_size):
        soft += lm.generate(prompt, contexts[i:i + batch_size], max_new_tokens, GENERATION_STOP)
    forced = [s + "\n" for s in soft]  # the soft prompt's own answers (and where it stops), to teacher-force on
    framed = [[teacher_context(t, c) if t else c for c in contexts] for t in texts]
    flat = [c for rows in framed for c in rows]
    outs: list[str] = []
    for i in range(0, len(flat), batch_size):
        outs += lm.generate(None, flat[i:i + batch_size], max_new_tokens, GENERATION_STOP)
    kl_sums = [0.0] * len(texts)
    n_tokens = 0
    for i in range(0, len(contexts), batch_size):
        rows = slice(i, i + batch_size)
        student, _, _ = lm.target_logits(prompt, contexts[rows], forced[rows])  # once per chunk, shared
        s_logp = F.log_softmax(student.float(), dim=-1)
        n_tokens += s_logp.shape[0]
        for j, rows_j in enumerate(framed):
            teacher, _, _ = lm.target_logits(None, rows_j[rows], forced[rows])
            t_logp = F.log_softmax(teacher.float(), dim=-1)
            kl_sums[j] += float(F.kl_div(s_logp, t_logp, log_target=True, reduction="sum"))  # KL(text || soft)
    results = []
    for j in range(len(texts)):
        mine = outs[j * len(contexts):(j + 1) * len(contexts)]
        agree = sum(normalize_answer(a) == normalize_answer(b) for a, b in zip(mine, soft)) / len(contexts)
        results.append({"agreement": agree, "mean_kl": kl_sums[j] / max(1, n_tokens)})
    return results


def verify(lm: LanguageModel, prompt: torch.Tensor, candidates: Sequence[tuple[str, str]], task: Task,
           inputs: Sequence[Example], labelled: Sequence[Example] = (), batch_size: int = 16) -> Verdict:
    """Score ``candidates`` ((text, origin) pairs) and the empty text on the source model ``lm``; best first.

    Duplicate texts are scored once (the first origin names them). ``labelled``: examples whose accuracy is
    reported next to faithfulness (never used for ranking)."""
    t0 = time.time()
    seen: dict[str, str] = {}
    for text, origin in candidates:
        text = text.strip()
        if text and text not in seen:
            seen[text] = origin
    texts = ["", *seen]
    scores = faithfulness_many(lm, prompt, texts, task, unlabelled(inputs), batch_size)
    scored = [ScoredText(t, seen.get(t, EMPTY), s["agreement"], s["mean_kl"]) for t, s in zip(texts, scores)]
    for c in scored if labelled else ():
        c.accuracy = score(lm, None, with_instruction(task, c.text), tuple(labelled), batch_size)
    empty, ranked = scored[0], sorted(scored[1:], key=lambda c: c.key)
    best = ranked[0] if ranked else empty
    verified = bool(ranked) and best.key < empty.key
    if not verified:
        logger.warning("warning: no candidate text is more faithful to the soft prompt than no text at all "
                       "(verified: false)")
    return Verdict(best, ranked, empty, verified, len(inputs), time.time() - t0)
