"""The Task: a named dataset of (input, target) examples plus its reference description.

A task is plain data. Loaders (``files.py``, ``bigbench.py``, ``generated.py``) build tasks; the registry
(``registry.py``) finds them by name. Splits are seeded so that every run sees the same train/val/test.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from soft2hard.errors import Soft2HardError

DEFAULT_TEMPLATE = "{input}\nAnswer:"
DEFAULT_TARGET_TEMPLATE = " {target}"


@dataclass(frozen=True)
class Example:
    input: str
    target: str


@dataclass(frozen=True)
class Splits:
    train: tuple[Example, ...]
    validation: tuple[Example, ...]
    test: tuple[Example, ...]


@dataclass(frozen=True)
class Task:
    """One task.

    Attributes:
        name: registry name, e.g. ``gen/first_letter`` or ``bigbench/linguistic_mappings/plural_json``.
        source: ``generated`` | ``bigbench`` | ``file``.
        description: the reference description (what a good interpretation of a prompt for it says).
        examples: all examples; splits are derived with :meth:`splits`.
        labels: the label set for classification tasks (each target is one of them); ``None`` for generation.
        template: how an input is shown to the model; must contain ``{input}``.
        target_template: how a target follows the prompt; must contain ``{target}``.
        description_source: which field(s) the description came from (provenance for the DoD manifest).
    """

    name: str
    source: str
    description: str
    examples: tuple[Example, ...]
    labels: tuple[str, ...] | None = None
    template: str = DEFAULT_TEMPLATE
    target_template: str = DEFAULT_TARGET_TEMPLATE
    description_source: str = "description"
    metadata: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if not self.examples:
            raise Soft2HardError(f"task {self.name!r} has no examples")
        if "{input}" not in self.template:
            raise Soft2HardError(f"task {self.name!r}: template {self.template!r} lacks '{{input}}'")
        if "{target}" not in self.target_template:
            raise Soft2HardError(
                f"task {self.name!r}: target_template {self.target_template!r} lacks '{{target}}'"
            )
        if self.labels is not None:
            if len(set(self.labels)) < 2:
                raise Soft2HardError(f"task {self.name!r}: a classification task needs >= 2 distinct labels")
            unknown = {ex.target for ex in self.examples} - set(self.labels)
            if unknown:
                raise Soft2HardError(
                    f"task {self.name!r}: targets {sorted(unknown)[:3]} are not in the label set {list(self.labels)}"
                )

    @property
    def answer_type(self) -> str:
        """classification (a closed label set) or generation (free text)."""
        return "classification" if self.labels is not None else "generation"

    def format_input(self, text: str) -> str:
        return self.template.format(input=text)

    def format_target(self, text: str) -> str:
        return self.target_template.format(target=text)

    def splits(self, seed: int = 0, val_fraction: float = 0.1, test_fraction: float = 0.2,
               max_examples: int | None = None) -> Splits:
        """Seeded shuffle, then test / validation / train, in that order, so that the test split of a task
        does not change when ``max_examples`` only trims the training data."""
        order = list(range(len(self.examples)))
        random.Random(seed).shuffle(order)
        n = len(order)
        if n < 3:
            raise Soft2HardError(f"task {self.name!r} has {n} examples; at least 3 are needed to split")
        n_test = max(1, round(n * test_fraction))
        n_val = max(1, round(n * val_fraction))
        if n_test + n_val >= n:
            raise Soft2HardError(f"task {self.name!r}: {n} examples are too few for the requested splits")
        test = [self.examples[i] for i in order[:n_test]]
        val = [self.examples[i] for i in order[n_test:n_test + n_val]]
        train = [self.examples[i] for i in order[n_test + n_val:]]
        if max_examples is not None:
            train = train[:max_examples]
        return Splits(tuple(train), tuple(val), tuple(test))

    def summary(self) -> dict:
        return {
            "name": self.name,
            "source": self.source,
            "answer_type": self.answer_type,
            "n_examples": len(self.examples),
            "labels": list(self.labels) if self.labels is not None else None,
            "description": self.description,
        }
