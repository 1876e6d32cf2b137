"""Generated instruction-induction tasks (``gen/<name>``).

Each task has a simple rule that its description states outright, so an interpretation of a prompt tuned on it
can be judged against a known answer. Examples are generated deterministically (fixed per-task seed) from the
word lists in ``soft2hard/data``; inputs and targets are short enough for a ~135M-parameter model.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from soft2hard.errors import Soft2HardError
from soft2hard.tasks.base import Example, Task

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
N_EXAMPLES = 300
PREFIX = "gen/"


def read_lines(filename: str) -> list[str]:
    """Non-blank, non-comment lines of a data file, de-duplicated, in file order."""
    path = DATA_DIR / filename
    seen: dict[str, None] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            seen.setdefault(line, None)
    return list(seen)


def read_pairs(filename: str) -> list[tuple[str, str]]:
    pairs = []
    for line in read_lines(filename):
        parts = line.split()
        assert len(parts) == 2, f"{filename}: bad pair line {line!r}"
        pairs.append((parts[0], parts[1]))
    return pairs


def word_list() -> list[str]:
    return read_lines("words.txt")


def sample(rng: random.Random, items: list, n: int = N_EXAMPLES) -> list:
    """Up to ``n`` distinct items in a seeded random order."""
    return rng.sample(items, min(n, len(items)))


def balanced(rng: random.Random, groups: dict[str, list[str]], n: int = N_EXAMPLES) -> list[Example]:
    """Equal numbers of examples per label (as many as the smallest group allows, up to ``n`` in all)."""
    per_label = min(n // len(groups), *(len(v) for v in groups.values()))
    examples = [Example(item, label) for label, items in groups.items() for item in rng.sample(items, per_label)]
    rng.shuffle(examples)
    return examples


def _map(rng: random.Random, items: list[str], fn: Callable[[str], str]) -> list[Example]:
    return [Example(x, fn(x)) for x in sample(rng, items)]


# --- generation tasks -----------------------------------------------------------------------------------


def _first_letter(rng: random.Random) -> list[Example]:
    return _map(rng, word_list(), lambda w: w[0])


def _last_letter(rng: random.Random) -> list[Example]:
    return _map(rng, word_list(), lambda w: w[-1])


def _uppercase(rng: random.Random) -> list[Example]:
    return _map(rng, word_list(), str.upper)


def _word_length(rng: random.Random) -> list[Example]:
    return _map(rng, word_list(), lambda w: str(len(w)))


def _reverse_word(rng: random.Random) -> list[Example]:
    short = [w for w in word_list() if 3 <= len(w) <= 4 and w != w[::-1]]
    return _map(rng, short, lambda w: w[::-1])


def _plural(rng: random.Random) -> list[Example]:
    pairs = read_pairs("plurals.txt")
    return [Example(s, p) for s, p in sample(rng, pairs)]


def _antonym(rng: random.Random) -> list[Example]:
    answers: dict[str, set[str]] = {}
    for a, b in read_pairs("antonyms.txt"):
        answers.setdefault(a, set()).add(b)
        answers.setdefault(b, set()).add(a)
    # A word with two different opposites ("light": dark / heavy) would make the task ambiguous: drop it.
    unique = sorted((w, next(iter(t))) for w, t in answers.items() if len(t) == 1)
    return [Example(w, t) for w, t in sample(rng, unique)]


def _larger_number(rng: random.Random) -> list[Example]:
    pairs = [(a, b) for a in range(1, 100) for b in range(1, 100) if a != b]
    return [Example(f"{a}, {b}", str(max(a, b))) for a, b in sample(rng, pairs)]


def _sum_two_numbers(rng: random.Random) -> list[Example]:
    pairs = [(a, b) for a in range(1, 21) for b in range(1, 21)]
    return [Example(f"{a}, {b}", str(a + b)) for a, b in sample(rng, pairs)]


def _next_number(rng: random.Random) -> list[Example]:
    return [Example(str(n), str(n + 1)) for n in sample(rng, list(range(1000)))]


# --- classification tasks -------------------------------------------------------------------------------


def _number_parity(rng: random.Random) -> list[Example]:
    numbers = [str(n) for n in range(1000)]
    return balanced(rng, {"even": numbers[0::2], "odd": numbers[1::2]})


def _starts_with_vowel(rng: random.Random) -> list[Example]:
    words = word_list()
    return balanced(rng, {"yes": [w for w in words if w[0] in "aeiou"],
                           "no": [w for w in words if w[0] not in "aeiou"]})


def _fruit_or_animal(rng: random.Random) -> list[Example]:
    fruits, animals = read_lines("fruits.txt"), read_lines("animals.txt")
    assert not set(fruits) & set(animals)
    return balanced(rng, {"fruit": fruits, "animal": animals})


def _word_sentiment(rng: random.Random) -> list[Example]:
    positive, negative = read_lines("positive_words.txt"), read_lines("negative_words.txt")
    assert not set(positive) & set(negative)
    return balanced(rng, {"positive": positive, "negative": negative})


def _greater_than_50(rng: random.Random) -> list[Example]:
    return balanced(rng, {"yes": [str(n) for n in range(51, 101)], "no": [str(n) for n in range(0, 50)]})


@dataclass(frozen=True)
class _Spec:
    description: str
    build: Callable[[random.Random], list[Example]]
    labels: tuple[str, ...] | None = None
    family: str | None = None  # the reference template shared with other tasks (None: a template of its own)


# Template families: tasks whose descriptions share one template ("Say whether the given word/number ...") are
# near-copies as translator references, so the DoD split keeps each family on one side (plan._group_of).
# tests/test_leaks.py checks that any two descriptions with ROUGE-L >= 0.5 share a family.
_OUTPUT_OF = "output_the_x_of_the_given"  # "Output the <part> of the given <word>."
_SAY_WHETHER = "say_whether"  # "Say whether the given <word/number> <is a or b>."
_YES_IF = "answer_yes_if"  # "Answer yes if the given <x> <test>, otherwise answer no."

_SPECS: dict[str, _Spec] = {
    "first_letter": _Spec("Output the first letter of the given word.", _first_letter, family=_OUTPUT_OF),
    "last_letter": _Spec("Output the last letter of the given word.", _last_letter, family=_OUTPUT_OF),
    "uppercase": _Spec("Rewrite the given word in capital (upper-case) letters.", _uppercase),
    "word_length": _Spec("Output the number of letters in the given word.", _word_length, family=_OUTPUT_OF),
    "reverse_word": _Spec("Spell the given word backwards: write its letters in reverse order.", _reverse_word),
    "plural": _Spec("Output the plural form of the given English noun.", _plural, family=_OUTPUT_OF),
    "antonym": _Spec("Output the opposite (antonym) of the given word.", _antonym, family=_OUTPUT_OF),
    "larger_number": _Spec("Given two numbers, output the larger of the two.", _larger_number),
    "sum_two_numbers": _Spec("Add the two given numbers and output their sum.", _sum_two_numbers),
    "next_number": _Spec("Output the number that comes right after the given number (add one).", _next_number),
    "number_parity": _Spec("Say whether the given number is even or odd.", _number_parity, ("even", "odd"),
                           family=_SAY_WHETHER),
    "starts_with_vowel": _Spec(
        "Answer yes if the given word starts with a vowel (a, e, i, o or u), otherwise answer no.",
        _starts_with_vowel, ("no", "yes"), family=_YES_IF),
    "fruit_or_animal": _Spec("Say whether the given word names a fruit or an animal.", _fruit_or_animal,
                             ("animal", "fruit"), family=_SAY_WHETHER),
    "word_sentiment": _Spec("Say whether the given word has a positive or a negative meaning.", _word_sentiment,
                            ("negative", "positive"), family=_SAY_WHETHER),
    "greater_than_50": _Spec("Answer yes if the given number is greater than 50, otherwise answer no.",
                             _greater_than_50, ("no", "yes"), family=_YES_IF),
}


def generated_names() -> list[str]:
    """Registry names of all generated tasks, e.g. ``gen/first_letter``."""
    return [PREFIX + key for key in _SPECS]


def family_of(name: str) -> str:
    """The template family of ``gen/<key>`` (the key itself for a task with a template of its own).

    Raises:
        Soft2HardError: ``name`` is not a generated task.
    """
    spec = _SPECS.get(name.removeprefix(PREFIX))
    if spec is None or not name.startswith(PREFIX):
        raise Soft2HardError(f"unknown generated task {name!r}; generated tasks are: {', '.join(generated_names())}")
    return spec.family or name.removeprefix(PREFIX)


@cache
def load_generated(name: str) -> Task:
    """Build the generated task ``gen/<key>`` (deterministic: the same examples on every call)."""
    key = name.removeprefix(PREFIX)
    spec = _SPECS.get(key)
    if spec is None or not name.startswith(PREFIX):
        raise Soft2HardError(f"unknown generated task {name!r}")
    rng = random.Random(zlib.crc32(key.encode("utf-8")))
    examples = tuple(spec.build(rng))
    return Task(
        name=PREFIX + key,
        source="generated",
        description=spec.description,
        examples=examples,
        labels=spec.labels,
        description_source="description",
        metadata={"generator": key, "family": spec.family or key},
    )
