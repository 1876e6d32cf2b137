"""BIG-bench JSON tasks, taken from the ``bigbench==1.0.0`` source distribution on PyPI.

The sdist (~342 MiB) holds every JSON task as ``bigbench-1.0.0/bigbench/benchmark_tasks/<task>/task.json`` or
``.../<task>/<subtask>/task.json``. Installing the package would pull TensorFlow, so instead we ``pip download``
the sdist once, stream it, copy the ``task.json`` files to ``<cache>/bigbench/tasks/`` and write
``<cache>/bigbench/index.json``. The index is written last and doubles as the "extraction finished" marker:
without it, the next call extracts again from scratch. All writes are atomic (temporary file + ``os.replace``).

Conversion of a ``task.json``: examples with ``target`` (a string, or a list whose first string is used) are
generation examples; examples with only ``target_scores`` take the highest-scoring choice as target, and the task
is a classification task when all examples share one choice set of at most 12 choices.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections import deque
from pathlib import Path, PurePosixPath

from soft2hard.errors import Soft2HardError
from soft2hard.tasks.base import Example, Task

logger = logging.getLogger(__name__)

PREFIX = "bigbench/"
BIGBENCH_REQUIREMENT = "bigbench==1.0.0"
SDIST_NAME = "bigbench-1.0.0.tar.gz"
MEMBER_ROOT = "bigbench-1.0.0/bigbench/benchmark_tasks/"
INDEX_VERSION = 1
MIN_EXAMPLES = 10
MAX_CHOICES = 12
MAX_PREFIX_CHARS = 400
_MEMBER_RE = re.compile(r"^" + re.escape(MEMBER_ROOT) + r"([^/]+(?:/[^/]+)?)/task\.json$")


def bigbench_dir(cache_dir: Path) -> Path:
    return Path(cache_dir) / "bigbench"


def _index_path(cache_dir: Path) -> Path:
    return bigbench_dir(cache_dir) / "index.json"


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --- conversion -----------------------------------------------------------------------------------------


def _first_target(value: object) -> str | None:
    if isinstance(value, list):
        value = value[0] if value else None
    return value.strip() if isinstance(value, str) and value.strip() else None


def _scores(value: object) -> dict[str, float] | None:
    if not isinstance(value, dict) or not value:
        return None
    if not all(isinstance(k, str) and isinstance(v, int | float) for k, v in value.items()):
        return None
    return value


def convert_examples(task_json: dict) -> tuple[list[Example], tuple[str, ...] | None]:
    """The usable examples of a BIG-bench ``task.json`` and its label set (``None`` for generation)."""
    raw = task_json.get("examples")
    if not isinstance(raw, list):
        return [], None
    rows: list[tuple[str, str | None, dict[str, float] | None]] = []
    for ex in raw:
        if not isinstance(ex, dict) or not isinstance(ex.get("input"), str) or not ex["input"].strip():
            continue
        target, scores = _first_target(ex.get("target")), _scores(ex.get("target_scores"))
        if target is None and scores is None:
            continue
        rows.append((ex["input"].strip(), target, scores))
    if not rows:
        return [], None

    labels: tuple[str, ...] | None = None
    if all(t is None for _, t, _ in rows):
        first = rows[0][2]
        assert first is not None
        stripped = tuple(k.strip() for k in first)
        same_set = all(s is not None and s.keys() == first.keys() for _, _, s in rows)
        if same_set and 2 <= len(first) <= MAX_CHOICES and all(stripped) and len(set(stripped)) == len(stripped):
            labels = stripped

    examples = []
    for text, target, scores in rows:
        if target is None:
            assert scores is not None
            target = max(scores, key=lambda k: scores[k]).strip()  # first of equal maxima
        if target:
            examples.append(Example(text, target))
    return examples, labels


def _normalized(text: str) -> str:
    return " ".join(re.sub(r"[^0-9a-z]+", " ", text.lower()).split())


def _sentence(text: str) -> str:
    text = " ".join(text.split())
    return text if text.endswith((".", "!", "?", ":")) else text + "."


def describe(own: str, task_prefix: str, parent: str) -> tuple[str, str]:
    """Reference description and its provenance from the task's ``description``, its ``task_prefix`` (used
    when short and not a restatement of the description) and, when a subtask has no description of its own,
    the parent task's description."""
    own, task_prefix, parent = own.strip(), task_prefix.strip(), parent.strip()
    parts: list[str] = []
    sources: list[str] = []
    if own:
        parts.append(own)
        sources.append("description")
    elif parent:
        parts.append(parent)
        sources.append("parent_description")
    if task_prefix and len(task_prefix) <= MAX_PREFIX_CHARS:
        p, d = _normalized(task_prefix), _normalized(" ".join(parts))
        if not d:
            parts, sources = [task_prefix], ["task_prefix"]
        elif d in p and p not in d:  # the prefix restates the description and says more: use it instead
            parts, sources = [task_prefix], ["task_prefix"]
        elif p and p not in d:
            parts.append(task_prefix)
            sources.append("task_prefix")
    return " ".join(_sentence(p) for p in parts), "+".join(sources)


def _string_field(task_json: dict, key: str) -> str:
    value = task_json.get(key)
    return value if isinstance(value, str) else ""


# --- download and extraction ----------------------------------------------------------------------------


SDIST_ENV = "SOFT2HARD_BIGBENCH_SDIST"


def not_served_message(target: Path, versions: list[str]) -> str:
    """The one-line error when the package index no longer serves the release (PyPI listed only bigbench 0.0.1,
    which holds no tasks, on 2026-12-07): where a copy of the sdist can be put instead."""
    listed = versions[0].split("from versions:")[-1].strip(" )") if versions else "other releases"
    return (f"the package index does not serve {BIGBENCH_REQUIREMENT} (it lists {listed}); BIG-bench tasks need a "
            f"copy of {SDIST_NAME}: set {SDIST_ENV}=PATH or put it at {target} (generated, compositional, category "
            "and file tasks do not need it)")


def download_sdist(cache_dir: Path) -> Path:
    """The BIG-bench sdist: ``$SOFT2HARD_BIGBENCH_SDIST`` when set, else ``<cache>/downloads/`` where an earlier
    ``pip download`` put it, else ``pip download`` it there now."""
    local = os.environ.get(SDIST_ENV, "").strip()
    if local:
        if not Path(local).is_file():
            raise Soft2HardError(f"{SDIST_ENV}={local} is not a file: point it at a copy of {SDIST_NAME}")
        return Path(local)
    downloads = Path(cache_dir) / "downloads"
    target = downloads / SDIST_NAME
    if target.is_file():
        return target
    downloads.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=downloads, prefix=".pip-"))
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
           "--progress-bar", "off", BIGBENCH_REQUIREMENT, "-d", str(tmp)]
    logger.info("downloading %s (sdist, ~342 MiB) from PyPI into %s; this can take a few minutes",
                BIGBENCH_REQUIREMENT, downloads)
    start = time.monotonic()
    tail: deque[str] = deque(maxlen=5)
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                stdin=subprocess.DEVNULL)
        stdout = proc.stdout
        assert stdout is not None

        def pump() -> None:
            for line in stdout:
                if line.strip():
                    tail.append(line.strip())
                    logger.debug("pip: %s", line.rstrip())

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        while True:
            try:
                rc = proc.wait(timeout=30)
                break
            except subprocess.TimeoutExpired:
                logger.info("still downloading BIG-bench (%.0f s so far)", time.monotonic() - start)
        reader.join(timeout=5)
        found = sorted(tmp.glob("bigbench-1.0.0*.tar.gz"))
        if rc != 0 or not found:
            if any("No matching distribution" in line or "from versions:" in line for line in tail):
                raise Soft2HardError(not_served_message(target, [line for line in tail if "from versions:" in line]))
            last = tail[-1] if tail else "no output"
            raise Soft2HardError(f"could not download {BIGBENCH_REQUIREMENT} with pip (exit {rc}): {last}")
        os.replace(found[0], target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("downloaded %s (%.0f MiB) in %.0f s", target.name, target.stat().st_size / 2**20,
                time.monotonic() - start)
    return target


def _task_relpath(member_name: str) -> str | None:
    """The ``<task>`` or ``<task>/<subtask>`` of a member to extract, ``None`` for members we skip.

    Raises on absolute or ``..`` member names: such an archive is not a genuine sdist."""
    pure = PurePosixPath(member_name)
    if pure.is_absolute() or ".." in pure.parts or "\\" in member_name:
        raise Soft2HardError(f"refusing to extract unsafe archive member {member_name!r}")
    match = _MEMBER_RE.match(member_name)
    if match is None or any(part in ("", ".") for part in match.group(1).split("/")):
        return None
    return match.group(1)


def extract_bigbench(sdist_path: Path, cache_dir: Path) -> list[dict]:
    """Extract every ``task.json`` of the sdist into the cache and write the index; returns its entries."""
    root = bigbench_dir(cache_dir)
    tasks_dir = root / "tasks"
    _index_path(cache_dir).unlink(missing_ok=True)
    if tasks_dir.exists():  # leftovers of an interrupted extraction
        shutil.rmtree(tasks_dir)
    tasks_dir.mkdir(parents=True)
    safe_root = tasks_dir.resolve()
    infos: dict[str, dict] = {}
    start, n_bytes = time.monotonic(), 0
    logger.info("extracting BIG-bench tasks from %s into %s", sdist_path, tasks_dir)
    try:
        tar = tarfile.open(sdist_path, "r|gz")
    except (OSError, tarfile.TarError) as exc:
        raise Soft2HardError(f"{sdist_path}: not a readable .tar.gz ({exc})") from None
    with tar:
        for member in tar:
            rel = _task_relpath(member.name)
            if rel is None or not member.isfile():
                continue
            dest = tasks_dir / rel / "task.json"
            if not dest.resolve().is_relative_to(safe_root):
                raise Soft2HardError(f"refusing to extract archive member {member.name!r} outside the cache")
            fh = tar.extractfile(member)
            assert fh is not None
            data = fh.read()
            _atomic_write(dest, data)
            n_bytes += len(data)
            infos[rel] = _summarize(rel, data)
            if len(infos) % 100 == 0:
                logger.info("extracted %d BIG-bench task files (%.0f MiB, %.0f s)", len(infos), n_bytes / 2**20,
                            time.monotonic() - start)
    entries, excluded = _build_index(infos)
    index = {"version": INDEX_VERSION, "source": BIGBENCH_REQUIREMENT, "tasks": entries, "excluded": excluded}
    _atomic_write(_index_path(cache_dir), json.dumps(index, indent=1, ensure_ascii=False).encode("utf-8"))
    logger.info("BIG-bench ready: %d task files, %d tasks listed, %.0f MiB, %.0f s", len(infos), len(entries),
                n_bytes / 2**20, time.monotonic() - start)
    return entries


def _summarize(rel: str, data: bytes) -> dict:
    try:
        task_json = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        logger.warning("BIG-bench %s/task.json is not valid JSON (%s); skipping it", rel, exc)
        return {"error": "invalid JSON"}
    if not isinstance(task_json, dict):
        return {"error": "not a JSON object"}
    examples, labels = convert_examples(task_json)
    return {
        "own": _string_field(task_json, "description"),
        "task_prefix": _string_field(task_json, "task_prefix"),
        "n_examples": len(examples),
        "labels": list(labels) if labels is not None else None,
    }


def _build_index(infos: dict[str, dict]) -> tuple[list[dict], dict[str, str]]:
    entries, excluded = [], {}
    for rel in sorted(infos):
        info = infos[rel]
        name = PREFIX + rel
        if "error" in info:
            excluded[name] = info["error"]
            continue
        if info["n_examples"] < MIN_EXAMPLES:
            excluded[name] = f"{info['n_examples']} usable examples (fewer than {MIN_EXAMPLES})"
            continue
        parent = infos.get(rel.split("/")[0], {}).get("own", "") if "/" in rel else ""
        description, source = describe(info["own"], info["task_prefix"], parent)
        if not description:
            description, source = f"BIG-bench task {rel}.", "name"
        entries.append({
            "name": name,
            "path": rel,
            "kind": "classification" if info["labels"] is not None else "generation",
            "n_examples": info["n_examples"],
            "labels": info["labels"],
            "description": description,
            "description_source": source,
        })
    return entries, excluded


def _read_index(cache_dir: Path) -> dict | None:
    path = _index_path(cache_dir)
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(index, dict) or index.get("version") != INDEX_VERSION or not isinstance(index.get("tasks"), list):
        return None
    return index


def is_extracted(cache_dir: Path) -> bool:
    return _read_index(cache_dir) is not None


def ensure_bigbench(cache_dir: Path, sdist_path: Path | None = None) -> dict:
    """Make sure the BIG-bench tasks are extracted under ``cache_dir`` and return the index.

    Downloads the sdist unless ``sdist_path`` is given (tests pass a small local tarball)."""
    index = _read_index(cache_dir)
    if index is not None:
        return index
    sdist = Path(sdist_path) if sdist_path is not None else download_sdist(cache_dir)
    extract_bigbench(sdist, cache_dir)
    index = _read_index(cache_dir)
    assert index is not None
    return index


def list_bigbench(cache_dir: Path, sdist_path: Path | None = None) -> list[dict]:
    """Index entries (name, kind, n_examples, labels, description, ...) of the listed BIG-bench tasks."""
    return list(ensure_bigbench(cache_dir, sdist_path)["tasks"])


def load_bigbench(name: str, cache_dir: Path, sdist_path: Path | None = None) -> Task:
    """Load ``bigbench/<task>`` or ``bigbench/<task>/<subtask>`` from the extracted cache."""
    index = ensure_bigbench(cache_dir, sdist_path)
    entry = next((e for e in index["tasks"] if e["name"] == name), None)
    if entry is None:
        reason = index.get("excluded", {}).get(name)
        detail = f"it is not listed: {reason}" if reason else "no such task"
        raise Soft2HardError(f"unknown BIG-bench task {name!r}: {detail}")
    path = bigbench_dir(cache_dir) / "tasks" / entry["path"] / "task.json"
    try:
        task_json = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise Soft2HardError(f"{path}: cannot read BIG-bench task ({exc}); delete {bigbench_dir(cache_dir)} "
                             "to extract again") from None
    examples, labels = convert_examples(task_json)
    return Task(
        name=name,
        source="bigbench",
        description=entry["description"],
        examples=tuple(examples),
        labels=labels,
        description_source=entry["description_source"],
        metadata={"path": str(path), "keywords": task_json.get("keywords", [])},
    )
