"""Translations checked on the source model before they are returned.

A text is a faithful translation of a soft prompt when, put before the inputs, it makes the source model behave
as the soft prompt does. The user has all it takes to check that: the soft prompt, the source model and some
unlabelled inputs. :func:`verify` scores every candidate text that way (and the empty text, the baseline any
instruction must beat), ranks them, and says whether the best one beats no text at all.

Faithfulness on unlabelled inputs (METHODS.md section 8):
- classification: the model's distribution over the label set with the soft prompt vs with the text before the
  input: agreement of the argmax labels, mean KL(soft || text);
- generation: one teacher-forced pass per (text, input) over the soft prompt's own greedy answer and its newline
  (no labels needed) gives both numbers: agreement = the text makes the model choose the soft prompt's greedy
  token at every position of that answer and at its end (so its greedy output is the same answer), and the mean
  per-token KL(text || soft).
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
from soft2hard.errors import Soft2HardError
from soft2hard.faithfulness import compare_label_distributions, label_distributions
from soft2hard.lm import LanguageModel
from soft2hard.scoring import GENERATION_STOP, score
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

    @property
    def verified_by(self) -> str | None:
        """``"agreement"`` when the best text reproduces more of the soft prompt's answers than no text; ``"kl"``
        when it only moves the model's distribution closer (same agreement, lower KL: a weaker guarantee, e.g. a
        wrong instruction that still shifts the model a little); None when not verified."""
        if not self.verified:
            return None
        return "agreement" if self.best.agreement > self.empty.agreement else "kl"

    def to_dict(self) -> dict:
        return {"text": self.best.text, "origin": self.best.origin, "verified": self.verified,
                "verified_by": self.verified_by,
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


def selection_inputs(task: Task, seed: int, n: int) -> tuple[Example, ...]:
    """The inputs candidates are verified on: the first ``n`` validation examples of the split with ``seed``
    (training examples when the task has no validation split), never test examples; only their inputs are read."""
    splits = task.splits(seed=seed)
    return (splits.validation or splits.train)[:n]


@torch.no_grad()
def faithfulness_many(lm: LanguageModel, prompt: torch.Tensor, texts: Sequence[str], task: Task,
                      inputs: Sequence[Example], batch_size: int = 16, max_new_tokens: int = 24,
                      decode_batch: int = 64) -> list[dict[str, float]]:
    """Faithfulness of each text to ``prompt`` on ``inputs`` (their targets are never read): one dict
    (agreement, mean_kl) per text, in order. Classification needs ``task.labels``; its label scores continue
    each context from its cache (``shared_context``). Generation decodes only the soft prompt's answers
    (``decode_batch`` rows at a time); the texts need no decoding at all."""
    inputs = list(inputs)
    if task.labels is not None:
        p = label_distributions(lm, task, inputs, prompt=prompt, batch_size=batch_size, shared_context=True)
        return [compare_label_distributions(p, label_distributions(lm, task, inputs, text=t or None,
                                                                   batch_size=batch_size, shared_context=True))
                for t in texts]
    contexts = [task.format_input(ex.input) for ex in inputs]
    soft: list[str] = []
    for i in range(0, len(contexts), decode_batch):
        soft += lm.generate(prompt, contexts[i:i + decode_batch], max_new_tokens, GENERATION_STOP)
    forced = [s + "\n" for s in soft]  # the soft prompt's own answers and where it stops
    student = _token_logprobs(lm, prompt, contexts, forced, batch_size)  # once, shared by every text
    s_choice = [_choices(lm, logp) for logp in student]
    pairs = [(j, i) for j in range(len(texts)) for i in range(len(contexts))]
    framed = [teacher_context(texts[j], contexts[i]) if texts[j] else contexts[i] for j, i in pairs]
    kl_sums, agree = [0.0] * len(texts), [0] * len(texts)
    for k in range(0, len(pairs), batch_size):
        chunk = pairs[k:k + batch_size]
        teacher = _token_logprobs(lm, None, framed[k:k + batch_size], [forced[i] for _, i in chunk], batch_size)
        for (j, i), t_logp in zip(chunk, teacher):
            kl_sums[j] += float(F.kl_div(student[i], t_logp, log_target=True, reduction="sum"))  # KL(text || soft)
            agree[j] += _choices(lm, t_logp) == s_choice[i]
    n_tokens = sum(s.shape[0] for s in student)
    return [{"agreement": agree[j] / len(contexts), "mean_kl": kl_sums[j] / max(1, n_tokens)}
            for j in range(len(texts))]


def _choices(lm: LanguageModel, logp: torch.Tensor) -> list[int | str]:
    """The greedy token at each position, with every stopping token (EOS, or one holding a line break: the
    answer ends there either way) as the same "stop"."""
    out: list[int | str] = []
    for tok in logp.argmax(-1).tolist():
        out.append("stop" if tok == lm.tokenizer.eos_token_id or "\n" in lm.decode([tok]) else tok)
    return out


def _token_logprobs(lm: LanguageModel, prompt: torch.Tensor | None, contexts: list[str], targets: list[str],
                    batch_size: int) -> list[torch.Tensor]:
    """Per context, the (n_target_tokens, V) next-token log-probabilities at its target's positions."""
    out: list[torch.Tensor] = []
    for i in range(0, len(contexts), batch_size):
        logits, _, rows = lm.target_logits(prompt, contexts[i:i + batch_size], targets[i:i + batch_size])
        logp = F.log_softmax(logits.float(), dim=-1)
        counts = torch.bincount(rows, minlength=len(contexts[i:i + batch_size])).tolist()
        out += list(torch.split(logp, counts))
    return out


def verify(lm: LanguageModel, prompt: torch.Tensor, candidates: Sequence[tuple[str, str]], task: Task,
           inputs: Sequence[Example], labelled: Sequence[Example] = (), batch_size: int = 16) -> Verdict:
    """Score ``candidates`` ((text, origin) pairs) and the empty text on the source model ``lm``; best first.

    Duplicate texts are scored once (the first origin names them). ``labelled``: examples whose accuracy is
    reported next to faithfulness (never used for ranking)."""
    if not inputs:
        raise Soft2HardError(f"{task.name}: no inputs to verify the candidates on; give a task or file with some")
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


def select_translation(lm: LanguageModel, translator, prompt: torch.Tensor, task: Task, inputs: Sequence[Example],
                       n: int = 8, seed: int = 0, cues: tuple[str, ...] = ("instruction", "labels"),
                       extra: Sequence[tuple[str, str]] = (), labelled: Sequence[Example] = (),
                       max_new_tokens: int = 64) -> Verdict:
    """``n`` translator candidates (:meth:`~soft2hard.interpret.translator.Translator.candidates`) and the
    ``extra`` (text, origin) pairs (e.g. the InSPEcT text), verified on ``inputs`` (their targets unread)."""
    candidates = translator.candidates(prompt, n=n, seed=seed, cues=cues, max_new_tokens=max_new_tokens)
    return verify(lm, prompt, [*candidates, *extra], task, inputs, labelled=labelled)
