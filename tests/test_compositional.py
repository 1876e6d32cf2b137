"""The compositional task generator: size, determinism, and that every task does what its instructions say."""

from __future__ import annotations

import collections
import hashlib
import json
import os
import subprocess
import sys

import pytest

from soft2hard.errors import Soft2HardError
from soft2hard.tasks import compositional, get_task, list_tasks
from soft2hard.tasks.categories import categories

NAMES = compositional.compositional_names()


def _fingerprint() -> str:
    h = hashlib.sha256()
    for name in NAMES:
        task = compositional.load_compositional(name)
        h.update(json.dumps([name, task.labels, task.metadata["instructions"],
                             [(e.input, e.target) for e in task.examples]]).encode())
    return h.hexdigest()


def test_at_least_1000_tasks_with_three_instructions_each():
    assert len(NAMES) >= 1000 and len(set(NAMES)) == len(NAMES)
    assert len(compositional.families()) >= 20
    kinds = collections.Counter()
    for name in NAMES:
        task = compositional.load_compositional(name)
        texts = task.metadata["instructions"]
        assert len(set(texts)) >= 3 and task.description == texts[0], name
        assert len(task.examples) >= compositional.MIN_EXAMPLES, name
        assert len({e.input for e in task.examples}) == len(task.examples), f"{name}: repeated inputs"
        assert all(e.target.strip() for e in task.examples), name
        if task.labels:
            assert collections.Counter(e.target for e in task.examples).keys() == set(task.labels), name
            for label in task.labels:  # an instruction that names the labels is what the translator should write
                assert any(label in t for t in texts), (name, label)
        kinds[task.answer_type] += 1
        kinds[task.metadata["level"]] += 1
    assert kinds["classification"] >= 300 and kinds["generation"] >= 250
    assert kinds["sentence"] >= 150  # sentence-level inputs, not only single words


def test_deterministic_across_processes_and_hash_seeds():
    code = "from tests.test_compositional import _fingerprint; print(_fingerprint())"
    outs = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        outs.add(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                check=True, timeout=300).stdout.strip())
    assert outs == {_fingerprint()}


def _check(name: str, x: str, y: str) -> bool:
    """An independent statement of the rule of ``name`` on one example."""
    family, params = name.split("/")[1], compositional.load_compositional(name).metadata["params"]
    nums = [int(v) for v in x.split(", ")] if family in ("two_numbers", "number_list_op", "filter_numbers") else None
    items = x.split(", ")
    if family == "arith":
        k, n = params["k"], int(x)
        return int(y) == {"add": n + k, "subtract": n - k, "multiply": n * k, "divide": n / k,
                          "remainder": n % k}[params["op"]]
    if family == "nth_letter":
        return y == x[params["k"] - 1]
    if family == "replace_letter":
        return params["x"] in x and y == "".join(params["y"] if c == params["x"] else c for c in x)
    if family == "drop_letter":
        return params["x"] not in y and len(y) == len(x) - x.count(params["x"])
    if family == "count_letter":
        return int(y) == sum(c == params["x"] for c in x)
    if family == "filter_numbers" and params["test"] == "above":
        return [int(v) for v in y.split(", ")] == [n for n in nums if n > params["k"]]
    if family == "filter_words" and params["test"] == "starts":
        return y.split(", ") == [w for w in items if w.startswith(params["x"])]
    if family == "number_list_op" and params["op"] == "sum":
        return int(y) == sum(nums) and 3 <= len(nums) <= 5
    if family == "word_list_op" and params["op"] == "sort":
        return y.split(", ") == sorted(items)
    if family == "word_test" and params["test"] == "starts":
        return (y == params["yes"]) == x.startswith(params["x"])
    if family == "number_test" and params["test"] == "multiple":
        return (y == params["yes"]) == (int(x) % params["k"] == 0)
    if family in ("category_set", "category_pair"):
        return x in categories()[y]
    if family == "sentence_topic":
        return any(w in categories()[y] for w in x.rstrip(".").split())
    if family == "sentence_op" and params["op"] == "count_words":
        return int(y) == len(x.split())
    return True


def test_examples_follow_the_stated_rule():
    checked = collections.Counter()
    for name in NAMES:
        task = compositional.load_compositional(name)
        for ex in task.examples:
            assert _check(name, ex.input, ex.target), (name, ex)
        checked[name.split("/")[1]] += 1
    assert len(checked) >= 20


def test_instructions_state_the_parameters():
    for name in NAMES:
        params = compositional.load_compositional(name).metadata["params"]
        texts = compositional.load_compositional(name).metadata["instructions"]
        for key in ("k", "x", "y", "cat"):
            if key in params and name.split("/")[1] not in ("nth_letter", "repeat"):  # "third", "twice"
                assert all(str(params[key]) in t for t in texts), (name, key, texts)


def test_registry_and_groups():
    task = get_task("comp/arith/add-7")
    assert task.name == "comp/arith/add-7" and task.metadata["params"] == {"op": "add", "k": 7}
    assert len(list_tasks(source="compositional")) == len(NAMES)
    with pytest.raises(Soft2HardError, match="comp/<family>/<params>"):
        get_task("comp/arith/add-999")
    # a family that restates a gen/* task shares its split group; a category task is a group of its own
    assert compositional.group_of("comp/nth_letter/2") == "gen/output_the_x_of_the_given"
    assert compositional.group_of("comp/arith/add-7") == "comp/arith"
    name = next(n for n in NAMES if n.startswith("comp/category_pair/"))
    assert compositional.group_of(name) == name and len(compositional.categories_of(name)) == 2
    assert "comp/category_pair/fruit-animal" not in NAMES and "comp/category_pair/animal-fruit" not in NAMES
