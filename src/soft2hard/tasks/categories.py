"""Word-category classification tasks (``cat/<label>-<label>[-...]``): one task per label set.

``cat/fruit-tool-animal`` asks which of the three categories a word belongs to; the examples are every member
word of those categories in ``data/categories.json``. Any 2-6 of the 48 categories make a task, so the family
supplies thousands of classification datasets whose label sets are known exactly: the classification dataset of
datasets uses it to test whether a translator names labels it never saw in training.

``data/categories_large.json`` is a second, separate inventory (160+ categories, none of them among the 48, no
member shared): ``cat/`` names may use its categories too (``cat/reptile-dog_breed``), which gives the DoD's
second word-classification family (kind ``classification_large``) label sets that cannot overlap the first's.
:func:`check_inventory` states the rules both files keep. A category name's ``_`` is a space in its label
(``dog_breed`` is answered ``dog breed``).
"""

from __future__ import annotations

import json
import random
import re
from functools import cache
from importlib import resources

from soft2hard.errors import Soft2HardError
from soft2hard.tasks.base import Example, Task

PREFIX = "cat/"
MIN_LABELS, MAX_LABELS = 2, 6
MIN_LARGE_CATEGORIES, MIN_LARGE_MEMBERS = 160, 16
_NAME = re.compile(r"[a-z]+(?:_[a-z]+)*")
_MEMBER = re.compile(r"[a-z]+(?: [a-z]+)*")
_NAME_FILLERS = frozenset({"and", "the"})  # name words a member may contain, besides those of 1-2 letters


@cache
def categories() -> dict[str, tuple[str, ...]]:
    """Category name -> member words, in file order."""
    text = (resources.files("soft2hard") / "data" / "categories.json").read_text(encoding="utf-8")
    return {name: tuple(words) for name, words in json.loads(text).items()}


@cache
def large_categories() -> dict[str, tuple[str, ...]]:
    """Category name -> member words of the larger inventory ``data/categories_large.json``, in file order."""
    text = (resources.files("soft2hard") / "data" / "categories_large.json").read_text(encoding="utf-8")
    return {name: tuple(words) for name, words in json.loads(text).items()}


@cache
def all_categories() -> dict[str, tuple[str, ...]]:
    """Both inventories in one mapping (they share no name and no member: :func:`check_inventory`)."""
    return {**categories(), **large_categories()}


def label_of(category: str) -> str:
    """The label a category is answered with: its name, ``_`` read as a space."""
    return category.replace("_", " ")


def _forms(word: str) -> set[str]:
    """``word`` lowercased with its simple plural forms (``box``: boxes, ``city``: cities)."""
    word = word.lower()
    forms = {word, word + "s", word + "es"}
    if word.endswith("y"):
        forms.add(word[:-1] + "ies")
    return forms


def _same_noun(a: str, b: str) -> bool:
    """Whether ``a`` and ``b`` are one noun, ignoring case and singular/plural."""
    return a.lower() in _forms(b) or b.lower() in _forms(a)


def check_inventory(small: dict, large: dict, *, min_categories: int = MIN_LARGE_CATEGORIES,
                    min_members: int = MIN_LARGE_MEMBERS) -> list[str]:
    """Problems with the larger inventory ``large`` next to the 48 categories ``small``; empty when it is sound.

    ``large`` needs ``min_categories`` categories of at least ``min_members`` distinct members. Names are
    lowercase words joined by ``_``, not one of ``small``'s names (singular or plural) and no member of either
    file. Members are lowercase words joined by single spaces, in one category only, neither a member nor a
    category name of ``small``, and do not contain a word of their category's name.
    """
    problems: list[str] = []
    if len(large) < min_categories:
        problems.append(f"only {len(large)} categories; need at least {min_categories}")
    small_members: dict[str, str] = {}
    for name, words in small.items():
        for word in words:
            small_members.setdefault(str(word).lower(), name)
    large_members: dict[str, str] = {}
    for name, words in large.items():
        for word in words:
            large_members.setdefault(str(word).lower(), name)
    all_members = {**large_members, **small_members}
    seen: dict[str, str] = {}
    for name, words in large.items():
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            problems.append(f"category name {name!r} is not lowercase words joined by '_'")
            continue
        clashes = [other for other in small if _same_noun(name, str(other))]
        if clashes:
            problems.append(f"category name {name!r} collides with the small inventory's {clashes[0]!r}")
        twins = [other for other in large if other != name and _same_noun(name, str(other))]
        if twins:
            problems.append(f"category name {name!r} collides with {twins[0]!r}")
        for form in sorted(_forms(name.replace("_", " "))):
            if form in all_members:
                problems.append(f"category name {name!r} is a member of category {all_members[form]!r}")
                break
        words = list(words) if isinstance(words, (list, tuple)) else []
        if len(words) < min_members:
            problems.append(f"category {name!r} has {len(words)} members; need at least {min_members}")
        name_words = [w for w in name.split("_") if len(w) > 2 and w not in _NAME_FILLERS]
        own: set[str] = set()
        for word in words:
            if not isinstance(word, str) or not _MEMBER.fullmatch(word):
                problems.append(f"member {word!r} of {name!r} is not lowercase words joined by single spaces")
                continue
            if word in own:
                problems.append(f"member {word!r} appears twice in {name!r}")
                continue
            own.add(word)
            if word in seen:
                problems.append(f"member {word!r} of {name!r} is also in {seen[word]!r}")
            else:
                seen[word] = name
            if word in small_members:
                problems.append(f"member {word!r} of {name!r} is also in the small inventory's "
                                f"{small_members[word]!r}")
            named = [other for other in small if _same_noun(word, str(other))]
            if named:
                problems.append(f"member {word!r} of {name!r} is the small inventory's category {named[0]!r}")
            hits = [w for w in name_words if any(f in word.split() for f in _forms(w))]
            if hits:
                problems.append(f"member {word!r} of {name!r} contains the category word {hits[0]!r}")
    return problems


def of_large_inventory(name: str) -> bool:
    """Whether ``name`` is a ``cat/`` task with a category of ``data/categories_large.json``."""
    return name.startswith(PREFIX) and any(c in large_categories() for c in category_names(name))


def category_task_name(labels: list[str] | tuple[str, ...]) -> str:
    return PREFIX + "-".join(labels)


def category_names(name: str) -> tuple[str, ...]:
    """The category names of task ``cat/a-b-c`` (the inverse of :func:`category_task_name`)."""
    return tuple(name[len(PREFIX):].split("-"))


def load_category_task(name: str) -> Task:
    """The task for ``cat/a-b-c``: inputs are the member words of a, b and c, targets their category's label."""
    names = category_names(name)
    known = all_categories()
    unknown = [c for c in names if c not in known]
    if unknown:
        raise Soft2HardError(f"unknown category {unknown[0]!r} in task {name!r}; categories are those of "
                             f"data/categories.json ({', '.join(categories())}) and of data/categories_large.json")
    if not MIN_LABELS <= len(names) <= MAX_LABELS or len(set(names)) != len(names):
        raise Soft2HardError(f"task {name!r} needs {MIN_LABELS}-{MAX_LABELS} distinct categories joined by '-'")
    labels = tuple(label_of(c) for c in names)
    examples = [Example(word, label) for c, label in zip(names, labels) for word in known[c]]
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
