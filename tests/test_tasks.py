"""Generated tasks, splits, the user-file loader and the registry (no network, no model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from soft2hard.errors import Soft2HardError
from soft2hard.tasks import Example, Task, get_task, list_tasks
from soft2hard.tasks.files import load_task_file
from soft2hard.tasks.generated import generated_names, load_generated

# --- generated tasks ------------------------------------------------------------------------------------


def test_at_least_14_generated_tasks_with_both_kinds() -> None:
    names = generated_names()
    assert len(names) >= 14
    assert all(n.startswith("gen/") and n[4:].isidentifier() and n == n.lower() for n in names)
    kinds = [load_generated(n).answer_type for n in names]
    assert kinds.count("classification") >= 5
    assert kinds.count("generation") >= 5


@pytest.mark.parametrize("name", generated_names())
def test_generated_task_is_well_formed(name: str) -> None:
    task = load_generated(name)
    assert task.name == name and task.source == "generated"
    assert len(task.examples) >= 100
    assert task.description.endswith(".") and len(task.description.split()) >= 5
    assert len({ex.input for ex in task.examples}) == len(task.examples), "inputs must be unique"
    for ex in task.examples:
        assert ex.input and ex.target
        assert ex.input == ex.input.strip() and ex.target == ex.target.strip()
        assert "\n" not in ex.input + ex.target
    if task.labels is not None:
        assert all(label == label.lower() and label.isalpha() for label in task.labels)
        assert {ex.target for ex in task.examples} == set(task.labels)


@pytest.mark.parametrize("name", generated_names())
def test_generated_task_is_deterministic(name: str) -> None:
    first = load_generated(name)
    load_generated.cache_clear()
    second = load_generated(name)
    assert first is not second
    assert first.examples == second.examples


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("gen/first_letter", lambda x: x[0]),
        ("gen/last_letter", lambda x: x[-1]),
        ("gen/uppercase", str.upper),
        ("gen/word_length", lambda x: str(len(x))),
        ("gen/reverse_word", lambda x: x[::-1]),
        ("gen/next_number", lambda x: str(int(x) + 1)),
        ("gen/larger_number", lambda x: str(max(int(v) for v in x.split(", ")))),
        ("gen/sum_two_numbers", lambda x: str(sum(int(v) for v in x.split(", ")))),
        ("gen/number_parity", lambda x: "even" if int(x) % 2 == 0 else "odd"),
        ("gen/greater_than_50", lambda x: "yes" if int(x) > 50 else "no"),
        ("gen/starts_with_vowel", lambda x: "yes" if x[0] in "aeiou" else "no"),
    ],
)
def test_generated_targets_follow_the_stated_rule(name: str, rule) -> None:
    for ex in load_generated(name).examples:
        assert ex.target == rule(ex.input), ex


def test_word_tasks_use_short_words() -> None:
    assert all(3 <= len(ex.input) <= 4 for ex in load_generated("gen/reverse_word").examples)
    plurals = dict((ex.input, ex.target) for ex in load_generated("gen/plural").examples)
    assert plurals.get("child", "children") == "children"
    antonyms = load_generated("gen/antonym").examples
    assert all(ex.input != ex.target for ex in antonyms)


# --- splits ---------------------------------------------------------------------------------------------


def test_splits_are_seeded_disjoint_and_complete() -> None:
    task = load_generated("gen/first_letter")
    a, b, c = task.splits(seed=0), task.splits(seed=0), task.splits(seed=1)
    assert a == b
    assert a.test != c.test
    parts = [set(a.train), set(a.validation), set(a.test)]
    assert sum(len(p) for p in parts) == len(task.examples)
    assert set().union(*parts) == set(task.examples)
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert task.splits(seed=0, max_examples=10).test == a.test


# --- user files -----------------------------------------------------------------------------------------


def _write(path: Path, text: str | bytes) -> Path:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def _jsonl(path: Path, rows: list) -> Path:
    return _write(path, "".join(json.dumps(r) + "\n" for r in rows))


def test_jsonl_generation(tmp_path: Path) -> None:
    path = _write(tmp_path / "gen.jsonl",
                  '{"input": "cat", "output": "c"}\n\n   \n{"input": " dog ", "output": " d", "id": 7}\n'
                  '{"input": 42, "output": 43}\n')
    task = load_task_file(path)
    assert task.answer_type == "generation" and task.source == "file"
    assert task.examples == (Example("cat", "c"), Example("dog", "d"), Example("42", "43"))
    assert task.description == "Task from file gen.jsonl"
    assert task.name == str(path)
    assert get_task(str(path)).examples == task.examples


def test_jsonl_classification_with_name_and_description(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "cls.jsonl", [{"input": "2", "label": "even"}, {"input": "3", "label": "odd"},
                                           {"input": "4", "label": "even"}])
    task = load_task_file(path, name="parity", description="Even or odd.")
    assert (task.name, task.description, task.answer_type) == ("parity", "Even or odd.", "classification")
    assert task.labels == ("even", "odd")


def test_csv_generation_and_classification(tmp_path: Path) -> None:
    gen = _write(tmp_path / "gen.csv", 'input,output\ncat,c\n"a, b",x\n\n"multi\nline",y\n')
    task = load_task_file(gen)
    assert task.examples == (Example("cat", "c"), Example("a, b", "x"), Example("multi\nline", "y"))
    cls = _write(tmp_path / "cls.csv", "\ufeffinput,label,note\nhappy,positive,\nsad,negative,x\n")
    task = load_task_file(cls)
    assert task.labels == ("negative", "positive")
    assert task.examples[1] == Example("sad", "negative")


@pytest.mark.parametrize(
    ("filename", "content", "line", "fragment"),
    [
        ("bad.jsonl", '{"input": "a", "output": "b"}\n{"input": "a", "output": \n', 2, "malformed JSON"),
        ("bad.jsonl", '{"input": "a", "output": "b"}\n\n["a", "b"]\n', 3, "JSON object"),
        ("bad.jsonl", '{"input": "a", "output": "b"}\n{"output": "b"}\n', 2, "'input'"),
        ("bad.jsonl", '{"input": "   ", "output": "b"}\n', 1, "'input'"),
        ("bad.jsonl", '{"input": "a", "output": "b"}\n{"input": "a"}\n', 2, "'output'"),
        ("bad.jsonl", '{"input": "a", "output": ""}\n', 1, "'output'"),
        ("bad.jsonl", '{"input": "a", "output": "b"}\n{"input": "c", "label": "d"}\n', 2, "line 1"),
        ("bad.jsonl", '{"input": "a", "label": "x", "output": "b"}\n', 1, "both"),
        ("bad.jsonl", '{"input": ["a"], "output": "b"}\n', 1, "must be a string"),
        ("bad.jsonl", '{"input": "a", "output": {"x": 1}}\n', 1, "must be a string"),
        ("bad.jsonl", '{"input": "a", "label": true}\n', 1, "must be a string"),
        ("bad.jsonl", b'{"input": "a", "output": "b"}\n{"input": "\xff", "output": "b"}\n', 2, "UTF-8"),
        ("bad.csv", "input,output\na,b\n,c\n", 3, "'input'"),
        ("bad.csv", "input,output\na,b\nc,d,e\n", 3, "fields"),
        ("bad.csv", "text,output\na,b\n", 1, "'input' column"),
        ("bad.csv", "input,other\na,b\n", 1, "'output' or a 'label'"),
        ("bad.csv", "input,output,label\na,b,\nc,,d\n", 3, "line 2"),
        ("bad.csv", 'input,output\na,b\n"c,d\n', 3, "CSV"),
        ("bad.csv", b"input,output\na,b\nc,\xe9\n", 3, "UTF-8"),
    ],
)
def test_file_errors_name_file_and_line(tmp_path: Path, filename: str, content: str | bytes, line: int,
                                        fragment: str) -> None:
    path = _write(tmp_path / filename, content)
    with pytest.raises(Soft2HardError) as info:
        load_task_file(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}:{line}: "), message
    assert fragment in message


@pytest.mark.parametrize(
    ("filename", "content", "fragment"),
    [
        ("empty.jsonl", "\n\n", "no examples"),
        ("empty.csv", "input,output\n", "no examples"),
        ("one.jsonl", '{"input": "a", "label": "x"}\n{"input": "b", "label": "x"}\n', "2 distinct labels"),
        ("tasks.txt", "input,output\n", "unsupported file type"),
    ],
)
def test_file_level_errors_name_the_file(tmp_path: Path, filename: str, content: str, fragment: str) -> None:
    path = _write(tmp_path / filename, content)
    with pytest.raises(Soft2HardError, match=fragment) as info:
        load_task_file(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.jsonl"
    with pytest.raises(Soft2HardError, match="not found") as info:
        get_task(str(path))
    assert str(path) in str(info.value)


# --- registry -------------------------------------------------------------------------------------------


def test_every_listed_generated_task_loads(tmp_path: Path) -> None:
    summaries = list_tasks("generated", cache_dir=tmp_path)
    assert [s["name"] for s in summaries] == generated_names()
    for summary in summaries:
        task = get_task(summary["name"], cache_dir=tmp_path)
        assert isinstance(task, Task)
        assert summary["answer_type"] == task.answer_type and summary["n_examples"] == len(task.examples)
        assert {"name", "source", "answer_type", "n_examples", "description"} <= summary.keys()


def test_unknown_names_suggest_close_ones(tmp_path: Path) -> None:
    with pytest.raises(Soft2HardError, match="'gen/first_letter'") as info:
        get_task("gen/first_leter", cache_dir=tmp_path)
    assert "\n" not in str(info.value)
    with pytest.raises(Soft2HardError, match="did you mean 'gen/antonym'"):
        get_task("antonyms", cache_dir=tmp_path)
    with pytest.raises(Soft2HardError, match="gen/<name>"):
        get_task("zzzzzz", cache_dir=tmp_path)


def test_unknown_source(tmp_path: Path) -> None:
    with pytest.raises(Soft2HardError, match="generated, compositional, bigbench"):
        list_tasks("huggingface", cache_dir=tmp_path)


def test_listing_everything_does_not_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from soft2hard.tasks import bigbench

    def no_download(cache_dir: Path) -> Path:
        raise AssertionError("must not download")

    monkeypatch.setattr(bigbench, "download_sdist", no_download)
    names = [s["name"] for s in list_tasks(cache_dir=tmp_path)]
    assert names == generated_names()
