"""data/categories.json: the word lists behind the ``cat/...`` classification tasks must be well formed."""

from __future__ import annotations

import json
import re
from collections import Counter
from importlib import resources

import pytest

WORD = re.compile(r"[a-z]+")


@pytest.fixture(scope="module")
def raw() -> str:
    return (resources.files("soft2hard") / "data" / "categories.json").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def cats(raw: str) -> dict[str, list[str]]:
    data = json.loads(raw)
    assert isinstance(data, dict)
    return data


def test_file_is_ascii(raw: str):
    assert raw.isascii()


def test_48_categories_with_word_names(cats):
    assert len(cats) == 48
    for name in cats:
        assert WORD.fullmatch(name), name


def test_each_category_has_24_to_30_distinct_words(cats):
    for name, words in cats.items():
        assert isinstance(words, list), name
        assert 24 <= len(words) <= 30, (name, len(words))
        assert len(set(words)) == len(words), name
        for word in words:
            assert isinstance(word, str) and WORD.fullmatch(word), (name, word)


def test_categories_are_disjoint(cats):
    counts = Counter(word for words in cats.values() for word in words)
    assert [word for word, n in counts.items() if n > 1] == []


def test_category_names_are_not_members(cats):
    members = {word for words in cats.values() for word in words}
    assert members.isdisjoint(cats)


def test_loader_reads_the_file_in_order(cats):
    from soft2hard.tasks.categories import categories

    loaded = categories()
    assert list(loaded) == list(cats)
    assert all(loaded[name] == tuple(words) for name, words in cats.items())
