"""The folder checks of bench/faults.py: after a ``kill -9``, which files fail to parse, which temporaries were
left and whether finished work was lost; after the final run, whether the results equal the reference (tensors bit
for bit, JSON results with wall-clock fields left out)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fault_jobs import Job

TIMING_FIELDS = ("train_seconds", "tokens_per_second")  # wall-clock numbers: differ between any two runs


# --- the folder checks ----------------------------------------------------------------------------------------

def is_temporary(name: str) -> bool:
    """A name made by soft2hard.atomic for a temporary (``.NAME.XXXX.tmp``, ``.NAME.old``) or a staging folder
    of the final files (``.final``)."""
    return name.startswith(".") and (name.endswith((".tmp", ".old")) or name == ".final")


def _walk(folder: Path):
    """(path, is_temporary) for everything under ``folder``, not descending into temporaries. Safe to call while
    a writer renames and deletes things in it (what vanishes meanwhile is skipped)."""
    stack = [Path(folder)]
    while stack:
        d = stack.pop()
        try:
            with os.scandir(d) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:  # gone (renamed or removed) since it was listed
            continue
        for e in entries:
            temp = is_temporary(e.name)
            yield Path(e.path), temp
            try:
                is_dir = e.is_dir(follow_symlinks=False)
            except OSError:
                is_dir = False
            if is_dir and not temp:
                stack.append(Path(e.path))


def temporaries(folder: Path) -> list[str]:
    if not Path(folder).exists():
        return []
    return [str(p.relative_to(folder)) for p, temp in _walk(folder) if temp]


def corrupt_files(folder: Path) -> list[str]:
    """Files (outside temporaries) that fail to parse: JSON that does not load, safetensors that do not open or
    whose tensors cannot be read."""
    from safetensors import safe_open

    if not Path(folder).exists():
        return []
    bad = []
    for p, temp in _walk(folder):
        if temp or not p.is_file():
            continue
        try:
            if p.suffix == ".json":
                json.loads(p.read_text(encoding="utf-8"))
            elif p.suffix == ".safetensors":
                with safe_open(str(p), framework="pt") as fh:
                    for key in fh.keys():
                        fh.get_tensor(key)
        except Exception as err:  # noqa: BLE001 - any failure to parse is what we are looking for
            bad.append(f"{p.relative_to(folder)} ({type(err).__name__}: {str(err)[:80]})")
    return bad


def _read_json(path: Path, default=None):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return default


def _checkpoints(out: Path, state_name: str) -> set[str]:
    """Complete checkpoints (their state file is written last) of a run folder."""
    return {str(p.parent.relative_to(out)) for p in Path(out).glob(f"checkpoints/step_*/{state_name}")}


@dataclass
class Check:
    """What one look at the folder found."""

    corrupt: list[str]
    temporaries: list[str]
    lost: list[str]


def inspect_folder(job: Job, out: Path, seen: set[str]) -> Check:
    """Parse every file, list temporaries, and check that the finished work in ``seen`` is still there
    (``seen`` is updated with what is finished now)."""
    corrupt = corrupt_files(out)
    temps = temporaries(out)
    now = job.progress(out) if Path(out).exists() else set()
    lost = sorted(seen - now)
    seen |= now
    return Check(corrupt, temps, lost)


def fingerprint(folder: Path) -> dict[str, tuple[int, int]]:
    """(mtime, size) of everything under ``folder`` (temporaries by name only): tells whether a run wrote."""
    out = {}
    for p, _ in _walk(folder):
        try:
            st = p.lstat()
        except OSError:
            continue
        out[str(p.relative_to(folder))] = (st.st_mtime_ns, st.st_size)
    return out


# --- comparing a resumed result with the reference -------------------------------------------------------------

def _canonical(obj) -> str:
    return json.dumps(obj, sort_keys=True)  # NaN == NaN, key order ignored


def _without(obj: dict, keys) -> dict:
    return {k: v for k, v in obj.items() if k not in keys}


def same_tensors(ref: Path, run: Path) -> list[str]:
    """Differences between two safetensors files (bit for bit)."""
    import torch
    from safetensors.torch import load_file

    if not run.is_file():
        return [f"{run.name}: missing"]
    a, b = load_file(str(ref)), load_file(str(run))
    if a.keys() != b.keys():
        return [f"{run}: tensor names differ"]
    return [f"{run}: tensor {k!r} differs" for k in sorted(a)
            if a[k].dtype != b[k].dtype or a[k].shape != b[k].shape or not torch.equal(a[k], b[k])]


def same_json(ref: Path, run: Path, drop=(), transform: Callable | None = None) -> list[str]:
    if not run.is_file():
        return [f"{run}: missing"]
    a, b = (json.loads(p.read_text(encoding="utf-8")) for p in (ref, run))
    if drop:
        a, b = _without(a, drop), _without(b, drop)
    if transform:
        a, b = transform(a), transform(b)
    return [] if _canonical(a) == _canonical(b) else [f"{run}: differs from {ref}"]
