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


def add_model_args(p: argparse.ArgumentParser, default: str = "smollm2-135m") -> None:
    shown = default or "the model the prompt was trained on"
    p.add_argument("--model", default=default, help=f"built-in name, local directory or HF id (default: {shown})")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:i] (default auto)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="weight dtype (default float32)")
    p.add_argument("--amp", default="none", choices=["none", "bfloat16"],
                   help="autocast compute dtype; bfloat16 is faster on CPUs with AMX and on GPUs")


def cache_dir(args) -> Path:
    if args.cache_dir is not None:
        return args.cache_dir
    env = os.environ.get("SOFT2HARD_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "soft2hard"


def load_model_from_args(args):
    from soft2hard.models import load_model

    logger.info("loading model %s", args.model)
    return load_model(args.model, device=args.device, dtype=args.dtype, cache_dir=cache_dir(args), amp=args.amp)
