"""The DoD manifest: tasks, references, label sets, splits and the soft prompts trained for each.

``manifest.json`` (format ``soft2hard-dod`` version 1):
    {"format": "soft2hard-dod", "version": 1, "model": "smollm2-135m", "settings": {...},
     "tasks": [{"name", "kind", "group", "split", "reference", "reference_source", "labels", "references"?,
                "test_score", "baseline_score", "metric",
                "prompts": [{"id", "file", "key"?, "seed", "step", "validation_score", "best"}]}]}
``file`` is relative to the manifest's folder: a PEFT adapter directory, a ``.safetensors`` file, or (with
``key``) one tensor of a multi-tensor bank file. Paths may not leave the folder. Loading validates everything
and turns any problem into a one-line :class:`Soft2HardError` naming the file and the field.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from soft2hard import atomic
from soft2hard.dod.plan import DISTILLED_PREFIX, heldout_leaks, leaking_train_tasks
from soft2hard.errors import Soft2HardError
from soft2hard.prompts import SoftPrompt, _read_safetensors

logger = logging.getLogger(__name__)
FORMAT, VERSION = "soft2hard-dod", 1
MANIFEST_NAME = "manifest.json"
SPLITS = ("train", "heldout")
TASK_KINDS = ("general", "classification", "distilled")


@dataclass(frozen=True)
class PromptEntry:
    id: str
    file: str
    seed: int
    step: int
    validation_score: float | None
    best: bool
    key: str | None = None

    def to_dict(self) -> dict:
        d = {"id": self.id, "file": self.file, "seed": self.seed, "step": self.step,
             "validation_score": self.validation_score, "best": self.best}
        if self.key is not None:
            d["key"] = self.key
        return d


@dataclass(frozen=True)
class TaskEntry:
    name: str
    kind: str
    group: str
    split: str
    reference: str
    reference_source: str
    labels: tuple[str, ...] | None
    prompts: tuple[PromptEntry, ...]
    test_score: float | None = None
    baseline_score: float | None = None
    metric: str | None = None
    inputs: str | None = None  # the registry task a distilled prompt was trained on (default: the name's)
    references: tuple[str, ...] | None = None  # every text that states the task (reference first), if several

    @property
    def inputs_task(self) -> str:
        """The registry name of the task whose inputs this prompt was tuned on."""
        return self.inputs or self.name.removeprefix(DISTILLED_PREFIX)

    def to_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "group": self.group, "split": self.split, "inputs": self.inputs,
                "reference": self.reference, "reference_source": self.reference_source,
                "labels": list(self.labels) if self.labels else None, "test_score": self.test_score,
                "baseline_score": self.baseline_score, "metric": self.metric,
                **({"references": list(self.references)} if self.references else {}),
                "prompts": [p.to_dict() for p in self.prompts]}


def _field(obj: dict, key: str, types, where: str, optional: bool = False):
    if key not in obj or obj[key] is None:
        if optional:
            return None
        raise Soft2HardError(f"{where}: missing field {key!r}")
    value = obj[key]
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise Soft2HardError(f"{where}: field {key!r} has the wrong type (bool)")
    if not isinstance(value, types):
        raise Soft2HardError(f"{where}: field {key!r} has the wrong type ({type(value).__name__})")
    return value


def _score(obj: dict, key: str, where: str) -> float | None:
    value = _field(obj, key, (int, float), where, optional=True)
    try:
        return None if value is None else float(value)
    except OverflowError:  # an integer beyond float range
        raise Soft2HardError(f"{where}: field {key!r} is out of range") from None


def _relative_path(value: str, where: str) -> str:
    p = Path(value)
    if not value or p.is_absolute() or ".." in p.parts or "\x00" in value:
        raise Soft2HardError(f"{where}: file {value!r} must be a relative path inside the DoD folder")
    return value


def _parse_prompt(obj, where: str) -> PromptEntry:
    if not isinstance(obj, dict):
        raise Soft2HardError(f"{where}: a prompt entry must be a JSON object")
    return PromptEntry(id=_field(obj, "id", str, where), file=_relative_path(_field(obj, "file", str, where), where),
                       seed=_field(obj, "seed", int, where), step=_field(obj, "step", int, where),
                       validation_score=_score(obj, "validation_score", where),
                       best=bool(_field(obj, "best", bool, where, optional=True)),
                       key=_field(obj, "key", str, where, optional=True))


def parse_task(obj, where: str) -> TaskEntry:
    if not isinstance(obj, dict):
        raise Soft2HardError(f"{where}: a task entry must be a JSON object")
    name = _field(obj, "name", str, where)
    where = f"{where} ({name!r})"
    kind, split = _field(obj, "kind", str, where), _field(obj, "split", str, where)
    if kind not in TASK_KINDS:
        raise Soft2HardError(f"{where}: kind {kind!r} is not one of {', '.join(TASK_KINDS)}")
    if split not in SPLITS:
        raise Soft2HardError(f"{where}: split {split!r} is not one of {', '.join(SPLITS)}")
    labels = _field(obj, "labels", list, where, optional=True)
    if labels is not None and not all(isinstance(x, str) for x in labels):
        raise Soft2HardError(f"{where}: labels must be a list of strings")
    references = _field(obj, "references", list, where, optional=True)
    if references is not None and not (references and all(isinstance(x, str) and x for x in references)):
        raise Soft2HardError(f"{where}: references must be a non-empty list of non-empty strings")
    prompts = _field(obj, "prompts", list, where)
    scores = {k: _score(obj, k, where) for k in ("test_score", "baseline_score")}
    return TaskEntry(name=name, kind=kind, group=_field(obj, "group", str, where), split=split,
                     reference=_field(obj, "reference", str, where),
                     reference_source=_field(obj, "reference_source", str, where),
                     labels=tuple(labels) if labels else None,
                     prompts=tuple(_parse_prompt(p, f"{where} prompt {i}") for i, p in enumerate(prompts)),
                     metric=_field(obj, "metric", str, where, optional=True),
                     inputs=_field(obj, "inputs", str, where, optional=True),
                     references=tuple(references) if references else None, **scores)


@dataclass
class Manifest:
    root: Path  # the folder that holds manifest.json; prompt files are relative to it
    model: str
    tasks: list[TaskEntry]
    settings: dict

    @classmethod
    def load(cls, path: str | Path) -> Manifest:
        path = Path(path)
        from soft2hard.dod import bank

        if path.is_dir() and bank.is_sharded(path):
            return bank.load_sharded(path)
        file = path / MANIFEST_NAME if path.is_dir() else path
        if not file.is_file():
            raise Soft2HardError(f"{file}: no DoD manifest here (build one with 'soft2hard dod build')")
        data = atomic.read_json(file)
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise Soft2HardError(f"{file}: not a soft2hard DoD manifest (format must be {FORMAT!r})")
        if data.get("version") != VERSION:
            raise Soft2HardError(f"{file}: manifest version {data.get('version')!r} is not supported (need {VERSION})")
        where = str(file)
        tasks = [parse_task(t, f"{where} task {i}") for i, t in enumerate(_field(data, "tasks", list, where))]
        names = [t.name for t in tasks]
        if len(set(names)) != len(names):
            raise Soft2HardError(f"{file}: task names repeat")
        settings = _field(data, "settings", dict, where, optional=True) or {}
        return cls(root=file.parent, model=_field(data, "model", str, where), tasks=tasks, settings=settings)

    @classmethod
    def load_many(cls, paths: list[str | Path]) -> Manifest:
        """Several DoDs of one model as one manifest (a bank of general tasks and a scale bank, say): its root is
        the folders' common parent and every prompt file is rewritten relative to it. Task names must not repeat.
        Each bank was split on its own, so a training task of one may leak into a held-out task of another:
        :meth:`clean_heldout` and translator training see the union, and :func:`without_leaking_training` drops
        such training tasks."""
        manifests = [cls.load(p) for p in paths]
        if len(manifests) == 1:
            return manifests[0]
        models = sorted({m.model for m in manifests})
        if len(models) > 1:
            raise Soft2HardError(f"the DoDs belong to different models ({', '.join(models)}); combine banks of one "
                                 "source model")
        root = Path(os.path.commonpath([m.root.resolve() for m in manifests]))
        tasks, seen = [], {}
        for m, path in zip(manifests, paths):
            prefix = m.root.resolve().relative_to(root)
            for t in m.tasks:
                if t.name in seen:
                    raise Soft2HardError(f"task {t.name!r} is in both {seen[t.name]} and {path}: combine banks "
                                         "with distinct tasks")
                seen[t.name] = path
                tasks.append(replace(t, prompts=tuple(replace(e, file=str(prefix / e.file)) for e in t.prompts)))
        return cls(root=root, model=models[0], tasks=tasks,
                   settings={"combined": [str(p) for p in paths], "parts": [m.settings for m in manifests]})

    def to_dict(self) -> dict:
        return {"format": FORMAT, "version": VERSION, "model": self.model, "settings": self.settings,
                "tasks": [t.to_dict() for t in self.tasks]}

    def split(self, split: str, kind: str | None = None) -> list[TaskEntry]:
        return [t for t in self.tasks if t.split == split and (kind is None or t.kind == kind)]

    def heldout_leaks(self, trained_on: Iterable[str] | None = None) -> dict[str, str]:
        """Held-out task name -> why it is not a clean held-out test (see :func:`soft2hard.dod.plan.heldout_leaks`:
        its labels occur in training targets, or its current split group also holds training tasks). With
        ``trained_on`` (a translator's recorded training tasks) only those training tasks count."""
        tasks = self.tasks
        if trained_on is not None:
            names = set(trained_on)
            tasks = [t for t in tasks if t.split == "heldout" or t.name in names]
            unseen = names - {t.name for t in self.tasks}
            if unseen:  # e.g. fresh prompts in a manifest of their own: their labels may be in those references
                logger.warning("note: %d of the translator's %d training tasks are not in this DoD, so the leak check "
                               "cannot read their references (e.g. %s); give the bank(s) it trained on as well to "
                               "check them", len(unseen), len(names), min(unseen))
        return heldout_leaks(tasks)

    def clean_heldout(self, kind: str | None = None, trained_on: Iterable[str] | None = None) -> list[TaskEntry]:
        """The held-out tasks (of ``kind``) that :meth:`heldout_leaks` does not list, in manifest order: what
        held-out evaluation (``translator eval``, ``evaluate --tasks heldout``) runs on."""
        leaks = self.heldout_leaks(trained_on)
        held = self.split("heldout", kind)
        clean = [t for t in held if t.name not in leaks]
        if len(clean) < len(held):
            logger.warning("note: %d of %d held-out tasks are excluded because they leak into translator training "
                           "(issue 19; scripts/leak_audit.py lists them):", len(held) - len(clean), len(held))
            for t in held:
                if t.name in leaks:
                    logger.warning("  %s: %s", t.name, leaks[t.name])
        return clean

    def resolve(self, entry: PromptEntry) -> Path:
        """The prompt's file, checked to lie inside the DoD folder (symlinks resolved)."""
        where = f"{self.root / MANIFEST_NAME}: prompt {entry.id!r}"
        try:
            root = self.root.resolve()
            target = (self.root / entry.file).resolve()
            exists = target.exists()
        except (OSError, RuntimeError, ValueError) as err:  # a symlink loop, a name too long, unencodable
            raise Soft2HardError(f"{where}: file {entry.file!r} cannot be resolved ({type(err).__name__})") from None
        if root != target and root not in target.parents:
            raise Soft2HardError(f"{where} points outside the DoD folder")
        if not exists:
            raise Soft2HardError(f"{where}: file {entry.file!r} is missing")
        return target

    def load_prompt(self, entry: PromptEntry, _bank_cache: dict | None = None) -> torch.Tensor:
        """The ``[n, d]`` float32 tensor of one prompt entry."""
        path = self.resolve(entry)
        if entry.key is None:
            return SoftPrompt.load(path).tensor
        cache = _bank_cache if _bank_cache is not None else {}
        if path not in cache:
            cache[path] = _read_safetensors(path)
        if entry.key not in cache[path]:
            raise Soft2HardError(f"{path}: no tensor {entry.key!r} (prompt {entry.id!r})")
        from soft2hard.dod.bank import decode_prompt

        try:
            tensor = decode_prompt(cache[path], entry.key)
        except Soft2HardError as e:
            raise Soft2HardError(f"{path}: {e}") from None
        if tensor.ndim != 2 or 0 in tensor.shape or not torch.isfinite(tensor).all():
            raise Soft2HardError(f"{path}: tensor {entry.key!r} is not a finite non-empty [n, d] float soft prompt")
        return tensor

    def iter_prompts(self, tasks: list[TaskEntry] | None = None):
        """(task, entry, tensor) for every prompt of ``tasks`` (default: all), reading each bank file once."""
        cache: dict = {}
        for task in self.tasks if tasks is None else tasks:
            for entry in task.prompts:
                yield task, entry, self.load_prompt(entry, cache)


def without_leaking_training(manifest: Manifest) -> tuple[Manifest, dict[str, str]]:
    """The manifest without the training tasks that would spoil one of its held-out tests
    (:func:`soft2hard.dod.plan.leaking_train_tasks`), and those tasks with the reasons."""
    dropped = leaking_train_tasks(manifest.tasks)
    if not dropped:
        return manifest, {}
    return replace(manifest, tasks=[t for t in manifest.tasks if t.name not in dropped]), dropped
