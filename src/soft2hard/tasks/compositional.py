"""Compositional generated tasks (``comp/<family>/<params>``): rule families with parameters.

A family is a rule with parameters ("add k to the number", "keep the words longer than k letters", "answer yes if
the word starts with x"); every parameter setting is a task of its own whose examples follow the rule exactly and
whose instruction texts (three or more, worded differently) say exactly what the rule is. So the DoD gets many
distinct tasks with exact references, which is what a translator needs to learn to read a prompt rather than to
recall one. The families live in :mod:`soft2hard.tasks.families` and :mod:`soft2hard.tasks.sentence_families`; everything is deterministic (the examples of a
task are drawn with a seed derived from its name).

Split hygiene: the tasks of one family share a template and must stay on one side of a DoD split, so a task's
split group is its family (:func:`group_of`); a family that restates an older ``gen/*`` task (``twin``) shares
that task's group instead, so that e.g. ``comp/nth_letter/2`` never trains a translator that is tested on
``gen/first_letter``. Tasks about word categories are split by category instead (:func:`group_of`).
"""

from __future__ import annotations

import random
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

from soft2hard.errors import Soft2HardError
from soft2hard.tasks.base import Example, Task

PREFIX = "comp/"
MIN_INSTRUCTIONS = 3
MIN_EXAMPLES = 40


@dataclass(frozen=True)
class Family:
    """A rule with parameters.

    ``instructions`` are ``str.format`` templates over a parameter dict; ``build(rng, params)`` returns the
    examples; ``labels(params)`` the label set of a classification family (None: generation). ``twin`` is the key
    of a ``gen/*`` task that one of this family's tasks restates (their split groups are merged)."""

    key: str
    instructions: tuple[str, ...]
    params: tuple[dict, ...]
    build: Callable[[random.Random, dict], list[Example]]
    labels: Callable[[dict], tuple[str, ...]] | None = None
    twin: str | None = None
    keys: tuple[str, ...] = ()  # the parameters that name a task (default: all); the others are wording
    level: str = "word"  # what one input is: word | number | list | sentence


def slug(family: Family, params: dict) -> str:
    """The task-name part for a parameter setting: its ``slug`` entry, else its ``keys`` values joined by '-'."""
    if "slug" in params:
        return str(params["slug"])
    text = "-".join(str(params[k]) for k in (family.keys or params) if k in params)
    return re.sub(r"[^a-z0-9_-]+", "_", text.lower()).strip("_")


@cache
def _index() -> dict[str, tuple[Family, dict]]:
    from soft2hard.tasks import families, sentence_families

    index: dict[str, tuple[Family, dict]] = {}
    for family in families.FAMILIES + sentence_families.FAMILIES:
        for params in family.params:
            name = f"{PREFIX}{family.key}/{slug(family, params)}"
            assert name not in index, f"duplicate compositional task {name}"
            index[name] = (family, params)
    return index


def compositional_names() -> list[str]:
    """Registry names of all compositional tasks, in family order."""
    return list(_index())


def families() -> list[str]:
    return list(dict.fromkeys(family_of(n) for n in _index()))


def _lookup(name: str) -> tuple[Family, dict]:
    found = _index().get(name)
    if found is None:
        fams = sorted({f.key for f, _ in _index().values()})
        raise Soft2HardError(f"unknown compositional task {name!r}; names are comp/<family>/<params> with a family "
                             f"from: {', '.join(fams)} (list them with `soft2hard tasks --source compositional`)")
    return found


def family_of(name: str) -> str:
    return _lookup(name)[0].key


def categories_of(name: str) -> tuple[str, ...]:
    """The word categories (``data/categories.json``) whose members a task's inputs are drawn from and whose names
    its instructions say, e.g. ``("fruit", "tool")``; empty for a task that is not about categories."""
    params = _lookup(name)[1]
    if "labels" in params:
        return tuple(params["labels"])
    if "a" in params:
        return (params["a"], params["b"])
    return (params["cat"],) if "cat" in params else ()


def level_of(name: str) -> str:
    """What one input of a compositional task is: word, number, list or sentence."""
    return _lookup(name)[0].level


def group_of(name: str) -> str:
    """The DoD split group of a compositional task (see the module docstring). A task about word categories is a
    group of its own, like a ``cat/*`` task: what it tests is naming categories, and the DoD holds it out by its
    categories (all held-out categories, or all training ones), not by its template."""
    family = _lookup(name)[0]
    if categories_of(name):
        return name
    if family.twin is not None:
        from soft2hard.tasks import generated

        return generated.PREFIX + generated.family_of(generated.PREFIX + family.twin)
    return PREFIX + family.key


def instructions_for(family: Family, params: dict) -> tuple[str, ...]:
    texts = tuple(dict.fromkeys(t.format(**params) for t in family.instructions))
    assert len(texts) >= MIN_INSTRUCTIONS, f"{family.key}: fewer than {MIN_INSTRUCTIONS} distinct instructions"
    return texts


@cache
def load_compositional(name: str) -> Task:
    """Build ``comp/<family>/<params>`` (deterministic: the same examples on every call)."""
    family, params = _lookup(name)
    rng = random.Random(zlib.crc32(name.encode("utf-8")))
    examples = tuple(family.build(rng, params))
    labels = family.labels(params) if family.labels else None
    texts = instructions_for(family, params)
    return Task(
        name=name,
        source="generated",
        description=texts[0],
        examples=examples,
        labels=labels,
        description_source="generator",
        metadata={"generator": "compositional", "family": family.key, "group": group_of(name),
                  "params": {k: params[k] for k in (family.keys or params) if k in params and k != "slug"}, "instructions": list(texts),
                  "level": family.level},
    )
