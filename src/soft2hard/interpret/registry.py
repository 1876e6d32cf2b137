"""The interpreters, under one set of names: every caller (``describe``, ``evaluate``, the comparison) looks a
method up here.

An interpreter turns a soft prompt into text descriptions: ``describe(prompt, *, cue=None) -> list[Description]``,
best first. Each loads what it needs itself, on first use (the InSPEcT profile, the translator and the model copy
that its LoRA weights change), so building one is free and a caller that never describes loads nothing.

- ``projection``: nearest vocabulary tokens (the naive baseline).
- ``inspect``: label-free InSPEcT, the profile's calibrated layer pair(s); with ``grid`` set, every pair of it.
- ``inspect_oracle``: the InSPEcT layer pair whose text best matches a reference (an upper bound for analysis:
  a user without the answer cannot run it), so its ``describe`` needs ``reference=``.
- ``translator``: the learned translator; ``cue`` asks for the instruction or the label set.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from soft2hard.errors import Soft2HardError
from soft2hard.interpret.base import Description
from soft2hard.lm import LanguageModel

logger = logging.getLogger(__name__)


@dataclass
class InterpreterSettings:
    """What the interpreters may need beyond the source model; every field has a working default."""

    cache_dir: Path | None = None  # where the models and the calibrated InSPEcT profile live
    profile: Path | None = None  # InSPEcT profile (default: the model's calibrated one)
    translator: Path | None = None  # translator folder (default: the one shipped for the model)
    projection_metric: str = "cosine"  # cosine | l2
    grid: object | None = None  # an InspectConfig: run this layer grid instead of the profile's pairs
    grid_layers: Sequence[int] | None = None  # or: the profile's settings on this square layer grid
    pairs: Sequence[tuple[int, int]] | None = None  # explicit (source, target) pairs of the grid
    oracle_metric: str = "auto"  # what inspect_oracle ranks by; auto: class_rate given labels, else rouge_l
    top_k: int = 1  # label-free descriptions returned by inspect (the profile's best pairs)
    max_new_tokens: int = 64  # translator output length
    load: dict = field(default_factory=dict)  # load_model keywords (device, dtype, amp) for a model copy
    share_model: bool = False  # the translator may put its LoRA on the caller's model (which is done with it)
    progress: bool = False


class Interpreter:
    """Base: ``name`` is the registry key; ``needs_reference`` marks methods that peek at the answer."""

    name = ""
    needs_reference = False

    def __init__(self, lm: LanguageModel, settings: InterpreterSettings | None = None) -> None:
        self.lm, self.settings = lm, settings or InterpreterSettings()

    def describe(self, prompt: torch.Tensor, *, cue: str | None = None, reference: str | None = None,
                 labels: Sequence[str] | None = None) -> list[Description]:
        raise NotImplementedError

    def saw(self, task: str) -> bool:
        """Whether the artefact behind this method (profile, translator) was built with prompts of ``task``."""
        return False


class Projection(Interpreter):
    name = "projection"

    def describe(self, prompt, *, cue=None, reference=None, labels=None):
        from soft2hard.interpret.projection import project

        return [project(self.lm, prompt.to(self.lm.device), self.settings.projection_metric)]


class _Profiled(Interpreter):
    """InSPEcT methods share the calibrated profile (layer pairs, demos, injection mode)."""

    _profile = None

    @property
    def profile(self):
        if self._profile is None:
            from soft2hard.interpret.selection import Profile, find_profile

            s = self.settings
            self._profile = Profile.load(s.profile or find_profile(s.cache_dir, self.lm.name))
        return self._profile

    def saw(self, task: str) -> bool:
        return self.profile.saw(task)

    def grid_asked(self) -> bool:
        s = self.settings
        return s.grid is not None or bool(s.pairs) or bool(s.grid_layers)

    def grid(self, prompt: torch.Tensor) -> list[Description]:
        from soft2hard.interpret.inspection import inspect_grid

        s = self.settings
        if s.grid is not None:
            cfg = s.grid
        elif s.grid_layers:
            cfg = self.profile.config(source_layers=list(s.grid_layers), target_layers=list(s.grid_layers))
        else:
            cfg = self.profile.config()
        return inspect_grid(self.lm, prompt.to(self.lm.device), cfg, pairs=s.pairs, progress=s.progress)


class Inspect(_Profiled):
    name = "inspect"

    def describe(self, prompt, *, cue=None, reference=None, labels=None):
        from soft2hard.interpret.selection import describe_label_free

        if self.grid_asked():
            return self.grid(prompt)
        return describe_label_free(self.lm, prompt.to(self.lm.device), self.profile, k=self.settings.top_k)


class InspectOracle(_Profiled):
    name = "inspect_oracle"
    needs_reference = True

    def describe(self, prompt, *, cue=None, reference=None, labels=None):
        from soft2hard.interpret.selection import oracle_rank

        if not reference:
            raise Soft2HardError("inspect_oracle ranks layer pairs against a reference: give one (--reference "
                                 "TEXT or --task NAME)")
        metric = self.settings.oracle_metric
        if metric == "auto":
            metric = "class_rate" if labels else "rouge_l"
        return oracle_rank(self.grid(prompt), reference, metric, labels)


class Translate(Interpreter):
    name = "translator"

    _translator = None

    @property
    def translator(self):
        """The translator on its own copy of the source model (LoRA changes the model it wraps)."""
        if self._translator is None:
            from soft2hard.interpret.translator import load_translator, shipped_translator
            from soft2hard.models import load_model

            s = self.settings
            model = self.lm if s.share_model else load_model(self.lm.name, cache_dir=s.cache_dir, **s.load)
            self._translator = load_translator(model, s.translator or shipped_translator(model.name))
        return self._translator

    def describe(self, prompt, *, cue=None, reference=None, labels=None):
        return self.translator.translate([prompt], cue=cue or "instruction",
                                         max_new_tokens=self.settings.max_new_tokens)

    def saw(self, task: str) -> bool:
        return self.translator.saw(task)


INTERPRETERS: dict[str, type[Interpreter]] = {cls.name: cls for cls in (Projection, Inspect, InspectOracle, Translate)}
NAMES = tuple(INTERPRETERS)
LABEL_FREE = tuple(n for n, cls in INTERPRETERS.items() if not cls.needs_reference)


def get_interpreter(name: str, lm: LanguageModel, settings: InterpreterSettings | None = None) -> Interpreter:
    """The interpreter ``name`` (one of :data:`NAMES`) on the source model ``lm``."""
    if name not in INTERPRETERS:
        raise Soft2HardError(f"unknown interpreter {name!r}; choose one of {', '.join(NAMES)}")
    return INTERPRETERS[name](lm, settings)


def check_names(names: Sequence[str], allowed: Sequence[str] = NAMES) -> tuple[str, ...]:
    """``names`` as a tuple, or the one-line error naming the unknown ones."""
    unknown = [n for n in names if n not in allowed]
    if unknown or not names:
        raise Soft2HardError(f"methods: unknown {', '.join(unknown) or '(none given)'}; choose from "
                             f"{', '.join(allowed)}")
    return tuple(names)
