"""Plumbing shared by every trainer (prompt tuning, packs, the translator, PEZ, RLPrompt).

Each trainer keeps its own loop, nanoGPT-style, readable on one screen; what they all need lives here once:
config validators, the learning-rate schedule, optimizer state to and from safetensors, and publishing a
finished run's files into its run folder.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import torch

from soft2hard.errors import Soft2HardError

STAGING = ".final"  # a run's finished files are written here, then moved up one by one (see publish)


# ---------------------------------------------------------------------------------------------- validators
def is_int(value) -> bool:
    """An integer that is not a bool (JSON ``true`` must not pass for 1)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    """A finite int or float that is not a bool (and not an integer beyond the float range)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


_INT_WHAT = {None: "an integer", 0: "a non-negative integer", 1: "a positive integer"}


def check_ints(cfg, *names: str, minimum: int | None = 1, optional: bool = False) -> None:
    """Raise unless each field ``names`` of ``cfg`` is an integer (never a bool) >= ``minimum`` (``None``: any
    integer); with ``optional`` a field may also be ``None``."""
    what = _INT_WHAT.get(minimum, f"an integer >= {minimum}")
    for name in names:
        value = getattr(cfg, name)
        if optional and value is None:
            continue
        if not is_int(value) or (minimum is not None and value < minimum):
            raise Soft2HardError(f"{name} must be {what}, got {value!r}")


def check_numbers(cfg, *names: str, positive: bool = True) -> None:
    """Raise unless each field ``names`` of ``cfg`` is a finite number (never a bool), > 0 (``positive``) or >= 0."""
    what = "a positive number" if positive else "a non-negative number"
    for name in names:
        value = getattr(cfg, name)
        if not is_number(value) or value < 0 or (positive and value == 0):
            raise Soft2HardError(f"{name} must be {what}, got {value!r}")


def check_choice(cfg, name: str, choices: Iterable[str]) -> None:
    """Raise unless the field ``name`` of ``cfg`` is one of ``choices``."""
    choices, value = tuple(choices), getattr(cfg, name)
    if not isinstance(value, str) or value not in choices:
        raise Soft2HardError(f"{name} must be one of {', '.join(choices)}, got {value!r}")


def check_texts(cfg, *names: str) -> None:
    """Raise unless each field ``names`` of ``cfg`` is a string or ``None``."""
    for name in names:
        if not isinstance(getattr(cfg, name), str | None):
            raise Soft2HardError(f"{name} must be text, got {getattr(cfg, name)!r}")


# ---------------------------------------------------------------------------------------------- schedule
def warmup_cosine(step: int, total: int, lr: float, warmup_steps: int) -> float:
    """The learning rate at ``step`` (0-based) of ``total``: linear warmup, then cosine decay to 10% of ``lr``."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total - warmup_steps)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr


# ---------------------------------------------------------------------------------------------- optimizer state
def optimizer_tensors(
    opt: torch.optim.Optimizer, params: Mapping[str, torch.Tensor], step_key: str | None = None
) -> dict[str, torch.Tensor]:
    """``opt``'s state for ``params`` (name -> parameter) as flat tensors, to save with safetensors.

    Keys are ``"{name}.{stat}"`` (just ``stat`` for the name ``""``); step counts become float (1,) tensors. With
    ``step_key``, parameters that always step together store one count under that key instead. Parameters
    without state (no step taken yet) are left out. :func:`load_optimizer_tensors` reads it back.
    """
    out: dict[str, torch.Tensor] = {}
    for name, p in params.items():
        for stat, value in opt.state.get(p, {}).items():
            if stat == "step":
                value = torch.as_tensor(value).float().reshape(-1)
                if step_key is not None:
                    out.setdefault(step_key, value)
                    continue
            out[f"{name}.{stat}" if name else stat] = value
    return out


def load_optimizer_tensors(
    opt: torch.optim.Optimizer,
    params: Mapping[str, torch.Tensor],
    tensors: Mapping[str, torch.Tensor],
    step_key: str | None = None,
) -> None:
    """Restore what :func:`optimizer_tensors` saved (same ``params`` names and ``step_key``): moments move to
    their parameter's device, step counts stay 0-d CPU tensors (as torch keeps them)."""
    for name, p in params.items():
        prefix = f"{name}." if name else ""
        state = {}
        for key, value in tensors.items():
            stat = key[len(prefix) :]
            if key.startswith(prefix) and key != step_key and "." not in stat:
                state[stat] = value.reshape(()).cpu() if stat == "step" else value.to(p.device)
        if not state:
            continue
        if step_key is not None:  # a copy each: the optimizer counts in place
            state["step"] = tensors[step_key].reshape(()).cpu().clone()
        opt.state[p] = state


# ---------------------------------------------------------------------------------------------- publish
def publish(out: Path, write: Callable[[Path], object]) -> None:
    """Put a finished run's files at the top of ``out``: ``write(folder)`` writes them to a staging folder, then
    each moves up with one rename, so every file appears whole. The caller writes the file that marks the run
    finished (``metrics.json``, ``translator.json``) after this."""
    out = Path(out)
    staging = out / STAGING
    write(staging)
    for f in sorted(staging.iterdir()):
        f.replace(out / f.name)
    shutil.rmtree(staging, ignore_errors=True)
