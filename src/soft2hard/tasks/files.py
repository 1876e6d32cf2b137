"""User task files: JSONL or CSV with an ``input`` column and either ``output`` or ``label``.

* JSONL: one JSON object per line; blank lines are skipped.
* CSV: a header row naming the columns; blank rows are skipped.

Rows with ``output`` make a generation task; rows with ``label`` make a classification task whose label set is
the sorted set of labels. Values are stripped of surrounding whitespace (the target template adds the leading
space); numbers are converted to strings. Every problem raises a one-line :class:`Soft2HardError` of the form
``<file>:<line>: <problem>``.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from soft2hard.errors import Soft2HardError
from soft2hard.tasks.base import Example, Task

SUPPORTED_SUFFIXES = (".jsonl", ".csv")
_TARGET_KEYS = ("output", "label")


def _fail(path: Path, line: int | None, problem: str) -> Soft2HardError:
    where = f"{path}:{line}" if line is not None else str(path)
    return Soft2HardError(f"{where}: {problem}")


def _value(path: Path, line: int, key: str, value: object) -> str | None:
    """A cell as a stripped string; ``None`` when absent (missing, null, or blank)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise _fail(path, line, f"{key!r} must be a string, got {type(value).__name__} {json.dumps(value)[:40]}")
    text = str(value).strip()
    return text or None


class _Rows:
    """Validates rows one by one and remembers whether the file is a generation or classification file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.examples: list[Example] = []
        self.target_key: str | None = None
        self.first_line: int | None = None

    def add(self, line: int, row: dict) -> None:
        text = _value(self.path, line, "input", row.get("input"))
        if text is None:
            raise _fail(self.path, line, "missing or empty 'input'")
        given = {k: _value(self.path, line, k, row.get(k)) for k in _TARGET_KEYS}
        present = [k for k in _TARGET_KEYS if given[k] is not None]
        if not present:
            raise _fail(self.path, line, "needs a non-empty 'output' (generation) or 'label' (classification)")
        if len(present) == 2:
            raise _fail(self.path, line, "gives both 'output' and 'label'; use one of them for every row")
        key = present[0]
        if self.target_key is None:
            self.target_key, self.first_line = key, line
        elif key != self.target_key:
            raise _fail(self.path, line, f"gives {key!r} but line {self.first_line} gives {self.target_key!r}; "
                                         "use one of them for every row")
        target = given[key]
        assert target is not None
        self.examples.append(Example(text, target))


def _as_text(path: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise _fail(path, line, f"not valid UTF-8 (byte 0x{data[exc.start]:02x})") from None


def _read_jsonl(path: Path, text: str, rows: _Rows) -> None:
    # JSON Lines are separated by "\n" only (a "\r" before it is JSON whitespace); str.splitlines would also
    # split inside strings at U+2028, U+0085, ... which JSON leaves unescaped
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise _fail(path, lineno, f"malformed JSON ({exc.msg} at column {exc.colno})") from None
        except (ValueError, RecursionError) as exc:  # a number too long to convert, nesting too deep
            raise _fail(path, lineno, f"malformed JSON ({exc})") from None
        if not isinstance(obj, dict):
            raise _fail(path, lineno, f"each line must be a JSON object, got {type(obj).__name__}")
        rows.add(lineno, obj)


def _read_csv(path: Path, text: str, rows: _Rows) -> None:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header: list[str] | None = None
    try:
        for record in reader:
            lineno = reader.line_num
            if not any(cell.strip() for cell in record):
                continue
            if header is None:
                header = [cell.strip() for cell in record]
                if "input" not in header:
                    raise _fail(path, lineno, f"header {header} lacks an 'input' column")
                if not any(k in header for k in _TARGET_KEYS):
                    raise _fail(path, lineno, f"header {header} needs an 'output' or a 'label' column")
                continue
            if len(record) != len(header):
                raise _fail(path, lineno, f"expected {len(header)} fields (as in the header), found {len(record)}")
            rows.add(lineno, dict(zip(header, record, strict=True)))
    except csv.Error as exc:
        raise _fail(path, reader.line_num, f"malformed CSV ({exc})") from None


def load_task_file(path: str | Path, name: str | None = None, description: str | None = None) -> Task:
    """Load a user task from a ``.jsonl`` or ``.csv`` file (see the module docstring for the format).

    ``name`` defaults to the path as given, so that ``get_task(task.name)`` loads the file again.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise _fail(path, None, f"unsupported file type {path.suffix or '(none)'!r}; use .jsonl or .csv")
    if not path.is_file():
        raise _fail(path, None, "task file not found" if not path.exists() else "not a regular file")
    text = _as_text(path, path.read_bytes())
    rows = _Rows(path)
    (_read_jsonl if suffix == ".jsonl" else _read_csv)(path, text, rows)
    if not rows.examples:
        raise _fail(path, None, "contains no examples")
    labels: tuple[str, ...] | None = None
    if rows.target_key == "label":
        labels = tuple(sorted({ex.target for ex in rows.examples}))
        if len(labels) < 2:
            raise _fail(path, None, f"a classification file needs at least 2 distinct labels, found {list(labels)}")
    return Task(
        name=name if name is not None else str(path),
        source="file",
        description=description if description is not None else f"Task from file {path.name}",
        examples=tuple(rows.examples),
        labels=labels,
        description_source="user" if description is not None else "filename",
        metadata={"path": str(path)},
    )
