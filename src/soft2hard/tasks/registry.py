"""Find tasks by name: ``gen/<name>``, ``comp/<family>/<params>``, ``cat/<a>-<b>``, ``bigbench/<task>[/<subtask>]``,
or a path to a .jsonl/.csv file."""

from __future__ import annotations

import difflib
import logging
from pathlib import Path

from soft2hard.errors import Soft2HardError
from soft2hard.tasks import bigbench, categories, compositional, generated
from soft2hard.tasks.base import Task
from soft2hard.tasks.files import SUPPORTED_SUFFIXES, load_task_file

logger = logging.getLogger(__name__)

SOURCES = ("generated", "compositional", "bigbench")


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "soft2hard"


def _resolve_cache(cache_dir: Path | None) -> Path:
    return Path(cache_dir) if cache_dir is not None else default_cache_dir()


def list_tasks(source: str | None = None, cache_dir: Path | None = None) -> list[dict]:
    """Summaries (name, source, answer_type, n_examples, labels, description) of the known tasks.

    ``source="bigbench"`` downloads and extracts BIG-bench on first use. ``source=None`` lists the generated
    tasks plus BIG-bench only when it is already extracted, so that a plain listing never starts a
    342 MiB download."""
    if source is not None and source not in SOURCES:
        raise Soft2HardError(f"unknown task source {source!r}; valid sources: {', '.join(SOURCES)}")
    cache = _resolve_cache(cache_dir)
    out: list[dict] = []
    if source in (None, "generated"):
        out.extend(generated.load_generated(name).summary() for name in generated.generated_names())
    if source == "compositional":  # 1,000+ tasks: listed when asked for
        out.extend(compositional.load_compositional(name).summary() for name in compositional.compositional_names())
    if source == "bigbench" or (source is None and bigbench.is_extracted(cache)):
        out.extend(_bigbench_summary(entry) for entry in bigbench.list_bigbench(cache))
    elif source is None:
        logger.info("BIG-bench tasks are not downloaded yet; list source 'bigbench' to fetch them")
    return out


def _bigbench_summary(entry: dict) -> dict:
    return {
        "name": entry["name"],
        "source": "bigbench",
        "answer_type": entry["kind"],
        "n_examples": entry["n_examples"],
        "labels": entry["labels"],
        "description": entry["description"],
    }


def _unknown(name: str, candidates: list[str], hint: str) -> Soft2HardError:
    close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.6)
    if close:
        return Soft2HardError(f"unknown task {name!r}; did you mean {' or '.join(repr(c) for c in close)}?")
    return Soft2HardError(f"unknown task {name!r}; {hint}")


def _looks_like_path(name: str) -> bool:
    return Path(name).suffix.lower() in SUPPORTED_SUFFIXES or Path(name).is_file()


def get_task(name_or_path: str, cache_dir: Path | None = None) -> Task:
    """The task with this registry name, or the task stored in this .jsonl/.csv file."""
    name = str(name_or_path).strip()
    cache = _resolve_cache(cache_dir)
    if _looks_like_path(name):
        return load_task_file(name)
    if name.startswith(generated.PREFIX):
        names = generated.generated_names()
        if name not in names:
            raise _unknown(name, names, f"generated tasks are: {', '.join(names)}")
        return generated.load_generated(name)
    if name.startswith(categories.PREFIX):
        return categories.load_category_task(name)
    if name.startswith(compositional.PREFIX):
        return compositional.load_compositional(name)
    if name.startswith(bigbench.PREFIX):
        index = bigbench.ensure_bigbench(cache)
        names = [entry["name"] for entry in index["tasks"]]
        if name not in names:
            reason = index.get("excluded", {}).get(name)
            subtasks = [n for n in names if n.startswith(name + "/")]
            if subtasks:
                shown = ", ".join(subtasks[:3]) + (", ..." if len(subtasks) > 3 else "")
                raise Soft2HardError(f"{name!r} is a group of {len(subtasks)} BIG-bench subtasks; pick one: {shown}")
            if reason:
                raise Soft2HardError(f"BIG-bench task {name!r} is not usable: {reason}")
            raise _unknown(name, names, "list the BIG-bench tasks with source 'bigbench'")
        return bigbench.load_bigbench(name, cache)
    candidates = generated.generated_names()
    if bigbench.is_extracted(cache):
        candidates += [entry["name"] for entry in bigbench.list_bigbench(cache)]
    # match the name as given and also as a bare name ("first_leter" -> "gen/first_letter")
    bare = {c.split("/", 1)[1]: c for c in candidates}
    close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.6)
    close += [bare[m] for m in difflib.get_close_matches(name, list(bare), n=3, cutoff=0.6) if bare[m] not in close]
    if close:
        raise Soft2HardError(f"unknown task {name!r}; did you mean {' or '.join(repr(c) for c in close[:3])}?")
    raise Soft2HardError(f"unknown task {name!r}; use gen/<name>, comp/<family>/<params>, cat/<category>-<category>[-...], "
                         "bigbench/<task>[/<subtask>] or a path to a .jsonl/.csv file")
