"""Helpers shared by the CLI command modules."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from soft2hard.errors import Soft2HardError

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


@dataclass(frozen=True)
class ConfigOptions:
    """Command-line options generated from a config dataclass (as PEFT's ``HfArgumentParser`` does): each named
    field becomes ``--field-name`` with the field's type and default, and its ``metadata["help"]`` as the help.

    ``flags`` renames an option (field -> option name without ``--``); ``choices`` limits a string's values;
    ``helps`` replaces a field's help where the command line says more (``@FILE``, a layer syntax); ``defaults``
    replaces a field's default for one command; ``parsers`` turn an option's text into the field's value when
    the config is made (their :class:`Soft2HardError` is the one-line error). A ``tuple[str, ...]`` field is a
    comma-separated list."""

    cls: type
    fields: tuple[str, ...]
    flags: Mapping[str, str] = field(default_factory=dict)
    choices: Mapping[str, Sequence[str]] = field(default_factory=dict)
    helps: Mapping[str, str] = field(default_factory=dict)
    defaults: Mapping[str, Any] = field(default_factory=dict)
    parsers: Mapping[str, Callable[[str], Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        known = {f.name for f in dataclasses.fields(self.cls)}
        for given in (self.fields, self.flags, self.choices, self.helps, self.defaults, self.parsers):
            unknown = sorted(set(given) - known)
            if unknown:  # a programming error, not user input
                raise TypeError(f"{self.cls.__name__} has no field(s) {', '.join(unknown)}")

    def dest(self, name: str) -> str:
        return self.flags.get(name, name.replace("_", "-")).replace("-", "_")

    def add_to(self, p, skip: Iterable[str] = ()) -> None:
        """Add the options (all but ``skip``) to a parser or an argument group."""
        hints = typing.get_type_hints(self.cls)
        fields = {f.name: f for f in dataclasses.fields(self.cls)}
        for name in self.fields:
            if name in skip:
                continue
            f = fields[name]
            default = self.defaults.get(name, f.default if f.default is not dataclasses.MISSING
                                        else f.default_factory())  # type: ignore[misc]
            kind = _option_type(hints[name], parsed=name in self.parsers)
            text = self.helps.get(name, f.metadata.get("help"))
            if default is not None and text is not None and "default" not in text:
                shown = ",".join(default) if isinstance(default, tuple) else default
                text = f"{text} (default {shown})"
            p.add_argument("--" + self.flags.get(name, name.replace("_", "-")), type=kind, default=default,
                           choices=self.choices.get(name), help=text.replace("%", "%%") if text else None)

    def values(self, args, skip: Iterable[str] = ()) -> dict:
        """Field -> value from parsed ``args`` (parsers applied), for the fields not in ``skip``."""
        values = {}
        for name in self.fields:
            if name not in skip:
                value = getattr(args, self.dest(name))
                values[name] = self.parsers[name](value) if name in self.parsers and value is not None else value
        return values

    def config(self, args, **given):
        """The config from parsed ``args``; ``given`` fields (e.g. a skipped ``seed``) are taken as they are."""
        return self.cls(**self.values(args, skip=given), **given)


def _comma_list(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _option_type(hint, parsed: bool):
    """argparse's ``type`` for a field's type hint: ``X | None`` is X; text left to a parser stays text."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (types.UnionType, typing.Union) and len(args) == 1:
        hint = args[0]
    if parsed or hint is str:
        return None
    if hint in (int, float, Path):
        return hint
    if typing.get_origin(hint) is tuple and typing.get_args(hint) == (str, ...):
        return _comma_list
    raise TypeError(f"no command-line type for {hint!r}; give the field a parser")


def tuning_options() -> ConfigOptions:
    """``tune``'s and ``tune-many``'s :class:`~soft2hard.tuning.TuningConfig` options."""
    from soft2hard.tuning import DISTILL_TARGETS, INITS, OBJECTIVES, TuningConfig

    return ConfigOptions(
        TuningConfig, ("n_tokens", "steps", "batch_size", "lr", "init", "init_text", "seed", "eval_every",
                       "patience", "max_train_examples", "objective", "teacher_prompt", "distill_targets"),
        flags={"n_tokens": "tokens"}, choices={"init": INITS, "objective": OBJECTIVES, "distill_targets": DISTILL_TARGETS},
        helps={"teacher_prompt": "text (or @FILE) that a distilled prompt replaces; --task/--inputs supplies the "
                                 "inputs"},
        parsers={"teacher_prompt": read_text_arg})


def read_text_arg(value: str) -> str:
    """'@path' reads the text from a file."""
    if not value.startswith("@"):
        return value
    path = Path(value[1:])
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as err:
        raise Soft2HardError(f"cannot read teacher prompt file {path}: {err.__class__.__name__}") from None
