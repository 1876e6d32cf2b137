"""Word-category classification tasks (``cat/<label>-<label>[-...]``): one task per label set.

``cat/fruit-tool-animal`` asks which of the three categories a word belongs to; the examples are every member
word of those categories in ``data/categories.json``. Any 2-6 of the 48 categories make a task, so the family
supplies thousands of classification datasets whose label sets are known exactly: the classification dataset of
datasets uses it to test whether a translator names labels it never saw in training.
"""

from __future__ import annotations

import json
import random
from functools import cache
from importlib import resources

from soft2hard.errors import Soft2HardError
from soft2hard.tasks.base import Example, Task

PREFIX = "cat/"
MIN_LABELS, MAX_LABELS = 2, 6


@cache
def categories() -> dict[str, tuple[str, ...]]:
    """Category name -> member words, in file order."""
    text = (resources.files("soft2hard") / "data" / "categories.json").read_text(encoding="utf-8")
    return {name: tuple(words) for name, words in json.loads(text).items()}


def category_task_name(labels: list[str] | tuple[str, ...]) -> str:
    return PREFIX + "-".join(labels)


def load_category_task(name: str) -> Task:
    """The task for ``cat/a-b-c``: inputs are the member words of a, b and c, targets their category."""
    labels = tuple(name[len(PREFIX):].split("-"))
    known = categories()
    unknown = [label for label in labels if label not in known]
    if unknown:
        raise Soft2HardError(f"unknown category {unknown[0]!r} in task {name!r}; categories are: "
                             f"{', '.join(known)}")
    if not MIN_LABELS <= len(labels) <= MAX_LABELS or len(set(labels)) != len(labels):
        raise Soft2HardError(f"task {name!r} needs {MIN_LABELS}-{MAX_LABELS} distinct categories joined by '-'")
    examples = [Example(word, label) for label in labels for word in known[label]]
    random.Random(name).shuffle(examples)
    *head, last = labels
    return Task(
        name=name,
        source="generated",
        description=f"Say which kind of thing the given word is: {', '.join(head)} or {last}.",
        examples=tuple(examples),
        labels=labels,
        description_source="generator",
    )


def sample_label_sets(pool: list[str], count: int, rng: random.Random, sizes: tuple[int, ...] = (2, 3, 4),
                      taken: set[frozenset[str]] | None = None) -> list[tuple[str, ...]]:
    """``count`` distinct label sets drawn from ``pool`` (sizes drawn from ``sizes``)."""
    taken = set() if taken is None else taken
    out: list[tuple[str, ...]] = []
    for _ in range(count * 50):
        if len(out) == count:
            break
        labels = tuple(rng.sample(pool, rng.choice(sizes)))
        if frozenset(labels) not in taken:
            taken.add(frozenset(labels))
            out.append(labels)
    if len(out) < count:
        raise Soft2HardError(f"could only draw {len(out)} distinct label sets of sizes {sizes} from "
                             f"{len(pool)} categories; ask for fewer")
    return out
