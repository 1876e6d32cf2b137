"""data/categories_large.json: the larger word-category inventory keeps the rules ``check_inventory`` states."""

from __future__ import annotations

import json
from importlib import resources

import pytest

from soft2hard.tasks.categories import categories, check_inventory, large_categories

SMALL = {"fruit": ("apple", "banana"), "tool": ("hammer", "saw")}


def good(n: int = 3) -> dict[str, tuple[str, ...]]:
    """A sound tiny inventory: two categories of ``n`` members, none of them in ``SMALL``."""
    return {"reptile": ("snake", "lizard", "gecko", "iguana")[:n], "herb": ("basil", "thyme", "dill", "sage")[:n]}


def check(large: dict) -> list[str]:
    return check_inventory(SMALL, large, min_categories=2, min_members=3)


def test_file_is_ascii_json_object():
    raw = (resources.files("soft2hard") / "data" / "categories_large.json").read_text(encoding="utf-8")
    assert raw.isascii()
    assert isinstance(json.loads(raw), dict)


def test_real_inventory_has_no_problems():
    assert check_inventory(categories(), large_categories()) == []


def test_real_inventory_is_large():
    large = large_categories()
    assert len(large) >= 150
    assert all(len(words) >= 16 for words in large.values())
    assert set(large).isdisjoint(categories())


def test_loader_reads_the_file_in_order():
    raw = json.loads((resources.files("soft2hard") / "data" / "categories_large.json").read_text(encoding="utf-8"))
    loaded = large_categories()
    assert list(loaded) == list(raw)
    assert all(loaded[name] == tuple(words) for name, words in raw.items())


def test_sound_tiny_inventory_passes():
    assert check(good()) == []


def test_default_minimum_counts_are_enforced():
    problems = check_inventory(SMALL, good())
    assert any("only 2 categories" in p for p in problems)
    assert any("'reptile' has 3 members" in p for p in problems)


@pytest.mark.parametrize("large, expected", [
    ({**good(), "herb": ("basil", "thyme", "basil")}, "member 'basil' appears twice in 'herb'"),
    ({**good(), "herb": ("basil", "thyme", "gecko")}, "member 'gecko' of 'herb' is also in 'reptile'"),
    ({**good(), "herb": ("basil", "thyme", "banana")}, "member 'banana' of 'herb' is also in the small inventory's "
                                                       "'fruit'"),
    ({**good(), "herb": ("basil", "thyme", "tools")}, "member 'tools' of 'herb' is the small inventory's category "
                                                      "'tool'"),
    ({**good(), "fruits": ("kiwi", "date", "plum")}, "category name 'fruits' collides with the small inventory's "
                                                     "'fruit'"),
    ({**good(), "Fruit": ("kiwi", "date", "plum")}, "category name 'Fruit' is not lowercase words joined by '_'"),
    ({**good(), "saw": ("jigsaw", "bandsaw", "fretsaw")}, "category name 'saw' is a member of category 'tool'"),
    ({**good(), "lizard": ("skink", "anole", "monitor")}, "category name 'lizard' is a member of category "
                                                          "'reptile'"),
    ({**good(), "herb": ("basil", "thyme")}, "category 'herb' has 2 members; need at least 3"),
    ({**good(), "herb": ("basil", "Thyme", "dill")}, "member 'Thyme' of 'herb' is not lowercase words joined by "
                                                     "single spaces"),
    ({**good(), "herb": ("basil", "thyme", "bay  leaf")}, "member 'bay  leaf' of 'herb' is not lowercase words "
                                                          "joined by single spaces"),
    ({**good(), "sauce": ("pesto", "gravy", "soy sauce")}, "member 'soy sauce' of 'sauce' contains the category "
                                                           "word 'sauce'"),
    ({**good(), "dog_breed": ("poodle", "pug", "sheep dogs")}, "member 'sheep dogs' of 'dog_breed' contains the "
                                                               "category word 'dog'"),
])
def test_each_kind_of_problem_is_detected(large, expected):
    assert check(large) == [expected]


def test_singular_and_plural_names_in_the_large_inventory_collide():
    assert check({**good(), "herbs": ("chive", "mint", "sorrel")}) == [
        "category name 'herb' collides with 'herbs'", "category name 'herbs' collides with 'herb'"]


def test_too_few_categories_is_detected():
    assert check_inventory(SMALL, good(), min_categories=3, min_members=3) == [
        "only 2 categories; need at least 3"]


def test_a_task_over_large_categories_answers_with_spaced_labels():
    from soft2hard.tasks import get_task

    task = get_task("cat/reptile-dog_breed")
    assert task.labels == ("reptile", "dog breed")
    assert {ex.target for ex in task.examples} == {"reptile", "dog breed"}
    assert {ex.input for ex in task.examples if ex.target == "dog breed"} == set(large_categories()["dog_breed"])
    assert "reptile or dog breed" in task.description
    mixed = get_task("cat/fruit-reptile")  # the two inventories can be mixed: they share no name or member
    assert mixed.labels == ("fruit", "reptile")


def test_an_unknown_category_names_both_inventories():
    from soft2hard.errors import Soft2HardError
    from soft2hard.tasks import get_task

    with pytest.raises(Soft2HardError, match="categories_large.json"):
        get_task("cat/reptile-dragon")
