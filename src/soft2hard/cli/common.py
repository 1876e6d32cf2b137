"""Helpers shared by the CLI command modules."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

logger = logging.getLogger("soft2hard")


class Parser(argparse.ArgumentParser):
    """argparse that reports usage errors in one line with exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {message} (see '{self.prog} --help')\n")


MODEL_OPTIONS = ("device", "dtype", "amp")


def add_model_args(p, default: str | None = "smollm2-135m", *, model: bool = True, model_help: str | None = None,
                   amp: str = "none", prefix: str = "", options: tuple[str, ...] = MODEL_OPTIONS,
                   title: str = "model") -> None:
    """The options of a command that loads a model, in one argument group: ``--model`` and
    ``--device``/``--dtype``/``--amp`` (read them back with :func:`load_model_from_args`).

    Args:
        p: a parser (the options get their own group, ``title``) or an existing argument group.
        default: ``--model``'s default; ``None`` means the model the prompt or DoD names.
        model: add ``--model`` (not where the model comes from a DoD or is added under another name).
        prefix: for a second model, e.g. ``target-`` gives ``--target-device``, ``--target-dtype``, ...
        options: which of device, dtype, amp to add (all, unless a command cannot honour one yet).
    """
    g = p.add_argument_group(title) if isinstance(p, argparse.ArgumentParser) else p
    if model:
        shown = default or "the model the prompt was trained on"
        g.add_argument(f"--{prefix}model", default=default,
                       help=model_help or f"built-in name, local directory or HF id (default: {shown})")
    if "device" in options:
        g.add_argument(f"--{prefix}device", default="auto", help="auto | cpu | cuda[:i] (default auto)")
    if "dtype" in options:
        g.add_argument(f"--{prefix}dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                       help="weight dtype (default float32)")
    if "amp" in options:
        g.add_argument(f"--{prefix}amp", default=amp, choices=["none", "bfloat16"],
                       help=f"autocast compute dtype (default {amp}); bfloat16 is faster on CPUs with AMX and "
                            "on GPUs")


def model_kwargs(args, prefix: str = "") -> dict:
    """``load_model`` keyword arguments from the options :func:`add_model_args` added (with the same prefix)."""
    dest = prefix.replace("-", "_")
    return {"device": getattr(args, f"{dest}device"), "dtype": getattr(args, f"{dest}dtype"),
            "amp": getattr(args, f"{dest}amp"), "cache_dir": cache_dir(args)}


def cache_dir(args) -> Path:
    if args.cache_dir is not None:
        return args.cache_dir
    env = os.environ.get("SOFT2HARD_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "soft2hard"


def load_model_from_args(args):
    from soft2hard.models import load_model

    logger.info("loading model %s", args.model)
    return load_model(args.model, **model_kwargs(args))
