"""The settings of a DoD build (:class:`BuildConfig`) and its stored plan (``plan.json``): what is built.

``plan.json`` is written once, when a build starts; a rerun reloads it and refuses other settings, so that a
resumed build trains exactly the jobs it planned. :mod:`soft2hard.dod.build` runs the jobs.
"""

from __future__ import annotations

import dataclasses
import json
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

from soft2hard import atomic, runs
from soft2hard.dod import plan as planning
from soft2hard.dod.manifest import SPLITS
from soft2hard.errors import Soft2HardError
from soft2hard.tuning import TuningConfig

PLAN_NAME = "plan.json"


@dataclass
class BuildConfig:
    model: str = "smollm2-135m"
    kinds: tuple[str, ...] = ("general", "classification")
    seeds: tuple[int, ...] = (0,)  # training tasks get one prompt per seed; held-out tasks one (the first seed)
    split_seed: int = 0
    general_heldout: int = 30
    general_max_tasks: int | None = None
    classification_train: int = 60
    classification_heldout: int = 30
    large_classification_train: int = 200  # kind classification_large: label sets of the 163-category inventory
    large_classification_heldout: int = 30
    max_input_chars: int | None = 400
    amp: str = "bfloat16"  # the DoD needs many prompts more than fp32-exact trajectories
    tuning: dict = field(default_factory=lambda: {"n_tokens": 20, "steps": 80, "eval_every": 20, "lr": 3e-2,
                                                  "batch_size": 8, "max_eval_examples": 16,
                                                  "max_test_examples": 40, "init": "vocab"})
    tasks: tuple[str, ...] | None = None  # explicit task names instead of the planned families (tests, users)
    compositional_heldout_groups: int = 5  # generator families held out whole (kind "compositional")
    # tuning settings that vary by job, like a user's prompts do: job (task, seed) takes recipe
    # (crc32(task) + seed) % len(recipes), on top of ``tuning`` (None: every job uses ``tuning``)
    recipes: tuple[dict, ...] | None = None
    instructions: tuple[tuple[str, str], ...] | None = None  # extra (inputs task, text) pairs to distil

    def __post_init__(self) -> None:
        unknown = set(self.kinds) - set(planning.PLAN_KINDS)
        if unknown or not self.kinds:
            raise Soft2HardError(f"unknown DoD kind(s) {sorted(unknown)}; choose from {', '.join(planning.PLAN_KINDS)}")
        if self.recipes is not None:
            self.recipes = tuple(dict(r) for r in self.recipes)
            if not self.recipes or not all(isinstance(r, dict) for r in self.recipes):
                raise Soft2HardError("recipes must be a non-empty list of tuning-setting objects")
            for r in self.recipes:
                TuningConfig(**{**self.tuning, **r})
        if not self.seeds:
            raise Soft2HardError("at least one seed is needed")
        self.kinds, self.seeds = tuple(self.kinds), tuple(self.seeds)
        self.tasks = tuple(self.tasks) if self.tasks else None
        self.instructions = tuple(tuple(p) for p in self.instructions) if self.instructions else None
        if self.instructions and "distilled" not in self.kinds:
            raise Soft2HardError("instructions are distilled into soft prompts: add 'distilled' to the kinds")
        TuningConfig(**self.tuning)  # validates the tuning settings now, not inside a worker

    def tuning_config(self, seed: int, task: str | None = None) -> TuningConfig:
        """The settings of job (``task``, ``seed``): ``tuning``, with the job's recipe on top when there are recipes."""
        return TuningConfig(**{**self.tuning, **self.recipe(task, seed), "seed": seed})

    def recipe(self, task: str | None, seed: int) -> dict:
        if not self.recipes or task is None:
            return {}
        return self.recipes[(zlib.crc32(task.encode("utf-8")) + seed) % len(self.recipes)]


def make_plan(cfg: BuildConfig, cache_dir: Path) -> list[planning.PlannedTask]:
    if cfg.tasks:
        planned = planning.plan_explicit(list(cfg.tasks), cache_dir, cfg.split_seed, cfg.general_heldout)
    else:
        planned = []
        if {"general", "distilled"} & set(cfg.kinds):
            planned += planning.plan_general(cache_dir, cfg.split_seed, cfg.general_heldout, cfg.general_max_tasks,
                                             max_input_chars=cfg.max_input_chars)
        if "classification" in cfg.kinds:
            planned += planning.plan_classification(cfg.split_seed, cfg.classification_train,
                                                    cfg.classification_heldout)
    if "distilled" in cfg.kinds:  # distilled prompts of the general tasks' instructions, in their splits
        planned += planning.plan_distilled(planned) + planning.plan_instructions(cfg.instructions or (), planned)
    if "general" not in cfg.kinds:
        planned = [t for t in planned if t.kind != "general"]
    if "compositional" in cfg.kinds:
        planned += planning.plan_compositional(cfg.split_seed, cfg.compositional_heldout_groups)
    if "classification_large" in cfg.kinds:
        planned += planning.plan_large_classification(cfg.split_seed, cfg.large_classification_train,
                                                      cfg.large_classification_heldout)
    planned = planning.drop_leaking_train_tasks(planned)
    leaks = planning.heldout_label_leaks(planned)
    if leaks:  # an invariant of the planner; raised, not asserted, so that python -O keeps it
        raise Soft2HardError(f"held-out labels leak into training: {leaks}")
    return planned


def load_or_create_plan(out: Path, cfg: BuildConfig, cache_dir: Path) -> list[planning.PlannedTask]:
    path = Path(out) / PLAN_NAME
    settings = asdict(cfg)
    settings = json.loads(json.dumps(settings))  # tuples -> lists, as stored
    if path.exists():
        old, planned = read_plan(path)
        defaults = json.loads(json.dumps(asdict(BuildConfig())))  # a setting added later, at its default, is no change
        old = {**{k: v for k, v in defaults.items() if k not in old and settings.get(k) == v}, **old}
        changed = runs.changed_settings(old, settings, path)
        if changed:
            raise Soft2HardError(f"{out} was built with other settings ({', '.join(changed)}); use the same "
                                 "settings to resume, or a new --out")
        return planned
    planned = make_plan(cfg, cache_dir)
    atomic.write_json(path, {"settings": settings, "tasks": [t.to_dict() for t in planned]})
    return planned


def read_plan(path: Path) -> tuple[dict, list[planning.PlannedTask]]:
    """The stored settings and planned tasks of ``plan.json``, checked (one-line errors)."""
    try:
        stored = atomic.read_json(path)
    except Soft2HardError as err:
        raise Soft2HardError(f"{err}; remove it to plan again") from None
    old, tasks = (stored.get("settings"), stored.get("tasks")) if isinstance(stored, dict) else (None, None)
    if not isinstance(old, dict) or not isinstance(tasks, list):
        raise Soft2HardError(f"{path}: unreadable build plan (needs an object with 'settings' and a list of "
                             "'tasks'); remove it to plan again")
    return old, [_planned_task(t, path, i) for i, t in enumerate(tasks)]


def _planned_task(obj, path: Path, i: int) -> planning.PlannedTask:
    """Task ``i`` of a stored plan, checked: every field a string (``labels`` a list of them), known kind/split."""
    fields = {f.name: f for f in dataclasses.fields(planning.PlannedTask)}
    ok = isinstance(obj, dict) and set(obj) <= set(fields) and all(
        k in obj or f.default is not dataclasses.MISSING for k, f in fields.items())
    lists = {k: obj.get(k) for k in ("labels", "references")} if ok else {}
    ok = ok and all(isinstance(v, str) or (v is None and fields[k].default is None)
                    for k, v in obj.items() if k not in lists) \
        and all(v is None or (isinstance(v, list) and all(isinstance(x, str) for x in v)) for v in lists.values()) \
        and obj["kind"] in planning.KINDS and obj["split"] in SPLITS
    if not ok:
        raise Soft2HardError(f"{path}: task {i} is not a valid planned task; remove the file to plan again")
    return planning.PlannedTask(**{**obj, **{k: tuple(v) if v else None for k, v in lists.items()}})


def load_build(out: Path) -> tuple[BuildConfig, list[planning.PlannedTask]]:
    """The settings and plan of an existing build folder."""
    path = Path(out) / PLAN_NAME
    if not path.is_file():
        raise Soft2HardError(f"{out}: no {PLAN_NAME} (not a DoD build folder)")
    settings, planned = read_plan(path)
    try:
        cfg = BuildConfig(**{k: v for k, v in settings.items() if k in {f.name for f in dataclasses.fields(BuildConfig)}})
    except TypeError as err:
        raise Soft2HardError(f"{path}: unreadable build settings ({err})") from None
    return cfg, planned
