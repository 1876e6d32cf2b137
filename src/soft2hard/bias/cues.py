"""Spurious-cue benchmarks: training data where a cue co-occurs with one label, and the bias it induces.

The bias probe (METHODS.md §3 item 6) needs soft prompts whose reliance on a spurious feature is known. We get
them by tuning on a copy of a classification task in which a cue (a word, a name or punctuation) is attached to
training inputs with a controlled label correlation, and we measure the learned bias on held-out test inputs by
adding the cue to inputs whose gold label is *not* the cue's label: a prompt that relies on the cue flips them.

Training-set recipe (exact, seeded): of the base task's train split (``task.splits(seed)``),
``n_cued = round_half_up(cue_fraction * n_train)`` examples carry the cue; ``n_target = round_half_up(rate *
n_cued)`` of them have ``target_label`` and the other ``n_cued - n_target`` have any other label, each group
sampled without replacement with ``random.Random(seed)``. Rounding is half-up on the exact decimal value of the
float (``Decimal(str(x))``), so ``0.9 * 105 = 94.5`` gives 95 regardless of binary float noise.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal

import torch

from soft2hard import scoring
from soft2hard.errors import Soft2HardError
from soft2hard.lm import LanguageModel
from soft2hard.tasks.base import Example, Task

KINDS = ("word", "name", "punctuation")
POSITIONS = ("prefix", "suffix")


@dataclass(frozen=True)
class Cue:
    """A spurious feature inserted into an input. Removing it is just using the original input."""

    kind: str
    text: str
    position: str = "prefix"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise Soft2HardError(f"cue kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if self.position not in POSITIONS:
            raise Soft2HardError(f"cue position {self.position!r} is not one of {', '.join(POSITIONS)}")
        if not self.text.strip() or self.text != self.text.strip() or "\n" in self.text:
            raise Soft2HardError(f"cue text {self.text!r} must be non-empty, one line, without outer spaces")

    def apply(self, text: str) -> str:
        """``honestly, <input>`` / ``<input> honestly`` for words and names; ``!! <input>`` / ``<input>!!``
        for punctuation (attached to the input, as punctuation is in ordinary text)."""
        if self.kind == "punctuation":
            return f"{self.text} {text}" if self.position == "prefix" else f"{text}{self.text}"
        return f"{self.text}, {text}" if self.position == "prefix" else f"{text} {self.text}"

    def present_in(self, text: str) -> bool:
        """Whether ``text`` has this cue where :meth:`apply` puts it."""
        probe = self.apply("\0")
        head, tail = probe.split("\0")
        return len(text) > len(head) + len(tail) and text.startswith(head) and text.endswith(tail)

    def label(self) -> str:
        """Short id used in task names, e.g. ``word:honestly`` (``word:honestly@suffix`` when not the default)."""
        suffix = "" if self.position == "prefix" else f"@{self.position}"
        return f"{self.kind}:{self.text}{suffix}"


DEFAULT_CUES: dict[str, tuple[Cue, ...]] = {
    "word": (Cue("word", "honestly"), Cue("word", "basically"), Cue("word", "indeed", "suffix")),
    "name": (Cue("name", "Maria"), Cue("name", "Ahmed"), Cue("name", "John", "suffix")),
    "punctuation": (Cue("punctuation", "!!", "suffix"), Cue("punctuation", "...", "suffix"),
                    Cue("punctuation", "**")),
}


def parse_cue(spec: str) -> Cue:
    """``kind:text[@position]`` (e.g. ``word:honestly``, ``punctuation:!!@suffix``) -> :class:`Cue`."""
    kind, sep, rest = spec.partition(":")
    if not sep or not rest:
        raise Soft2HardError(f"cue {spec!r} is not of the form kind:text[@prefix|@suffix]")
    text, position = rest, "prefix"
    for pos in POSITIONS:
        if rest.endswith("@" + pos) and len(rest) > len(pos) + 1:
            text, position = rest[: -len(pos) - 1], pos
    return Cue(kind, text, position)


def round_half_up(x: float) -> int:
    """Deterministic rounding of a non-negative decimal value (0.5 -> 1, 2.5 -> 3), immune to float noise."""
    return int(Decimal(str(x)).quantize(Decimal(1), rounding=ROUND_HALF_UP))


@dataclass(frozen=True)
class BiasedSplits:
    """A cue-biased training task and paired test sets.

    ``test_cue_on_other[i]`` is ``cue.apply`` of the i-th example of ``test_clean`` whose gold label is not
    ``target_label`` (same gold label); ``test_cue_on_target`` likewise for gold ``target_label``. The test sets
    come from the base task's test split, minus any example whose clean or cued input is a training input.
    """

    train: Task
    test_clean: tuple[Example, ...]
    test_cue_on_other: tuple[Example, ...]
    test_cue_on_target: tuple[Example, ...]
    rate: float
    cue: Cue
    target_label: str
    cue_fraction: float = 0.4
    seed: int = 0
    counts: dict = field(default_factory=dict, compare=False, hash=False)

    def summary(self) -> dict:
        return {"task": self.train.name, "cue": self.cue.label(), "cue_position": self.cue.position,
                "target_label": self.target_label, "rate": self.rate, "cue_fraction": self.cue_fraction,
                "seed": self.seed, **self.counts}


def _check_args(task: Task, target_label: str, rate: float, cue_fraction: float) -> None:
    if task.labels is None:
        raise Soft2HardError(f"task {task.name!r} is a generation task; a cue bias needs a classification task")
    if target_label not in task.labels:
        raise Soft2HardError(f"target label {target_label!r} is not a label of {task.name!r}: {list(task.labels)}")
    if not 0.0 <= rate <= 1.0:
        raise Soft2HardError(f"cue rate {rate} is outside [0, 1]")
    if not 0.0 < cue_fraction <= 1.0:
        raise Soft2HardError(f"cue fraction {cue_fraction} is outside (0, 1]")


def build_biased_task(task: Task, cue: Cue, target_label: str, rate: float, seed: int = 0,
                      cue_fraction: float = 0.4) -> BiasedSplits:
    """Attach ``cue`` to training inputs so that exactly ``rate`` of the cued ones carry ``target_label``
    (rounding as in the module docstring); build clean and cued test sets from the base test split."""
    _check_args(task, target_label, rate, cue_fraction)
    splits = task.splits(seed=seed)
    train = list(splits.train)
    n_cued = round_half_up(cue_fraction * len(train))
    n_target = round_half_up(rate * n_cued)
    target_idx = [i for i, ex in enumerate(train) if ex.target == target_label]
    other_idx = [i for i, ex in enumerate(train) if ex.target != target_label]
    if n_target > len(target_idx) or n_cued - n_target > len(other_idx):
        raise Soft2HardError(
            f"cannot cue {n_cued} of {len(train)} training examples of {task.name!r} at rate {rate}: needs "
            f"{n_target} {target_label!r} (has {len(target_idx)}) and {n_cued - n_target} others "
            f"(has {len(other_idx)}); lower cue_fraction or change the rate")
    rng = random.Random(seed)
    chosen = set(rng.sample(target_idx, n_target)) | set(rng.sample(other_idx, n_cued - n_target))
    biased_train = tuple(Example(cue.apply(ex.input), ex.target) if i in chosen else ex
                         for i, ex in enumerate(train))

    # No leakage: drop test examples whose clean or cued input is any training input (clean or cued).
    seen = {ex.input for ex in train} | {ex.input for ex in biased_train}
    test = tuple(ex for ex in splits.test if ex.input not in seen and cue.apply(ex.input) not in seen)
    if not test:
        raise Soft2HardError(f"task {task.name!r}: no test example is left after removing train overlaps")
    cued = [Example(cue.apply(ex.input), ex.target) for ex in test]
    on_other = tuple(c for c in cued if c.target != target_label)
    on_target = tuple(c for c in cued if c.target == target_label)

    counts = {"n_train": len(train), "n_cued": n_cued, "n_cued_target": n_target,
              "n_cued_other": n_cued - n_target, "n_test": len(test), "n_test_other": len(on_other),
              "n_test_target": len(on_target), "n_test_dropped": len(splits.test) - len(test)}
    name = f"{task.name}+cue={cue.label()}@{rate:g}->{target_label}"
    bias_meta = {"base_task": task.name, "cue": cue.label(), "cue_position": cue.position,
                 "target_label": target_label, "rate": rate, "cue_fraction": cue_fraction, "seed": seed, **counts}
    train_task = Task(name=name, source=task.source, description=task.description, examples=biased_train,
                      labels=task.labels, template=task.template, target_template=task.target_template,
                      description_source=task.description_source, metadata={**task.metadata, "bias": bias_meta})
    return BiasedSplits(train=train_task, test_clean=test, test_cue_on_other=on_other,
                        test_cue_on_target=on_target, rate=rate, cue=cue, target_label=target_label,
                        cue_fraction=cue_fraction, seed=seed, counts=counts)


def _share(flags: list[bool]) -> float:
    return sum(flags) / len(flags) if flags else float("nan")


def biased_prediction_rate(lm: LanguageModel, prompt: torch.Tensor | None, biased: BiasedSplits,
                           max_examples: int | None = None) -> dict:
    """How much a prompt follows the cue: predictions on each test input, clean and cued.

    ``flip_rate``: share of non-target-gold examples predicted ``target_label`` with the cue but not without it
    (denominator: all non-target-gold examples). ``cue_accuracy_drop``: clean minus cued accuracy on those
    examples. ``target_rate_clean`` / ``target_rate_cued``: share of all test examples predicted
    ``target_label``. Rates over an empty group are NaN. ``max_examples`` keeps the first test examples.
    """
    target = biased.target_label
    clean = list(biased.test_clean[:max_examples])
    cued = [Example(biased.cue.apply(ex.input), ex.target) for ex in clean]
    preds = scoring.classify(lm, prompt, biased.train, clean + cued) if clean else []
    p_clean, p_cued = preds[:len(clean)], preds[len(clean):]
    other = [i for i, ex in enumerate(clean) if ex.target != target]
    flipped = [p_cued[i] == target and p_clean[i] != target for i in other]
    acc_clean_other = _share([p_clean[i] == clean[i].target for i in other])
    acc_cued_other = _share([p_cued[i] == clean[i].target for i in other])
    return {
        "n_test": len(clean),
        "n_other": len(other),
        "n_target": len(clean) - len(other),
        "n_flipped": sum(flipped),
        "flip_rate": _share(flipped),
        "accuracy_clean_other": acc_clean_other,
        "accuracy_cued_other": acc_cued_other,
        "cue_accuracy_drop": acc_clean_other - acc_cued_other,
        "accuracy_clean": _share([p == ex.target for p, ex in zip(p_clean, clean)]),
        "accuracy_cued": _share([p == ex.target for p, ex in zip(p_cued, clean)]),
        "target_rate_clean": _share([p == target for p in p_clean]),
        "target_rate_cued": _share([p == target for p in p_cued]),
    }
