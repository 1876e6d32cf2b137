"""Run folders shared by every resumable trainer (tune, PEZ, RLPrompt).

A run folder holds ``config.json`` (the resolved settings), ``checkpoints/step_XXXXXX/`` (each complete once its
state file exists: checkpoints are written with :func:`soft2hard.atomic.directory`) and the trainer's result.
:func:`prepare` applies the same rules everywhere: an existing run is refused unless resumed or overwritten, a
resume must use the same settings (only ``steps`` and ``eval_every`` may change), and temporaries left by a
killed writer are removed.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict
from pathlib import Path

from soft2hard import atomic
from soft2hard.errors import Soft2HardError

CHECKPOINT_DIR = "checkpoints"
RESUMABLE_CHANGES = ("steps", "eval_every")


def checkpoints(out: Path, state_name: str) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(out) / CHECKPOINT_DIR
    if not root.exists():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("step_") and (p / state_name).exists())


def changed_settings(stored, wanted: dict, source: Path, may_change: tuple[str, ...] = ()) -> list[str]:
    """Names (for messages) of the settings that differ between a folder's ``stored`` ones and the ``wanted``.

    Every resumable job (tuning runs, DoD builds, evaluations) refuses to continue under other settings; they
    differ only in ``may_change``. ``source`` names the stored file in the error for a non-object."""
    if not isinstance(stored, dict):
        raise Soft2HardError(f"{source}: expected a JSON object of settings; remove it to start over")
    changed = sorted(k for k in set(stored) | set(wanted) if k not in may_change and stored.get(k) != wanted.get(k))
    return [k if k in wanted else ascii(k) for k in changed]  # a stored-only key may hold any character


def settings(model: str, task: str, cfg, **extra) -> dict:
    """The settings a run stores in ``config.json`` (and a resume or a sweep rerun compares): ``extra`` (such as
    the optimizer's name), the model, the task and every field of the dataclass ``cfg``."""
    return {**extra, "model": model, "task": task, **asdict(cfg)}


def checkpoint_dir(out: Path, step: int) -> Path:
    return Path(out) / CHECKPOINT_DIR / f"step_{step:06d}"


def prepare(out: Path, resolved: dict, what: str, state_name: str, resume: bool, overwrite: bool,
            result_name: str | None = None, scratch: tuple[str, ...] = ()) -> list[Path]:
    """Check and set up ``out`` for a run with settings ``resolved``; returns the checkpoints to resume from.

    ``what`` names the run in errors ("a tuning run"); ``result_name`` (if given) also marks an existing run;
    ``scratch`` are sub-folders whose stale temporaries are removed too."""
    out = Path(out)
    existing = checkpoints(out, state_name)
    finished = result_name is not None and (out / result_name).exists()
    if (existing or finished) and not resume and not overwrite:
        raise Soft2HardError(f"{out} already holds {what}; pass --resume to continue or --overwrite to restart")
    if overwrite and out.exists():
        shutil.rmtree(out)
        existing = []
    if resume and (out / "config.json").exists():
        old = atomic.read_json(out / "config.json")
        changed = changed_settings(old, resolved, out / "config.json", RESUMABLE_CHANGES)
        if changed:
            raise Soft2HardError(f"--resume with different settings than {out}/config.json: {', '.join(changed)}")
    out.mkdir(parents=True, exist_ok=True)
    for d in (out, out / CHECKPOINT_DIR, *(out / s for s in scratch)):
        atomic.remove_stale(d)  # temporaries of a killed earlier run
    atomic.write_json(out / "config.json", resolved)
    return existing if resume else []
