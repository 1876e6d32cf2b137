"""Where an evaluation's tasks and soft prompts come from: a DoD, prompt files, or task names alone."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from soft2hard.errors import Soft2HardError
from soft2hard.evaluation.source import EvalTask
from soft2hard.models import canonical_model_name
from soft2hard.tasks import get_task

logger = logging.getLogger(__name__)
SPLIT_WORDS = ("heldout", "train", "all")


def from_dod(dod: Path, names: list[str], cache_dir: Path, max_tasks: int | None = None) -> tuple[str, list[EvalTask]]:
    """The DoD's best prompt (first seed) of each named task; ``heldout`` / ``train`` / ``all`` select a split
    (``heldout``: the clean held-out tasks, :meth:`Manifest.clean_heldout`, leaving out those that leak into
    translator training with a logged note; a leaking held-out task named explicitly is kept, with a warning).

    Each task is restricted exactly as the DoD build restricted it, and split with the prompt's seed, so the
    test examples are ones the prompt never trained on. Returns (the DoD's source model, items)."""
    from soft2hard.dod import plan as planning
    from soft2hard.dod.manifest import Manifest

    manifest = Manifest.load(dod)
    by_name = {t.name: t for t in manifest.tasks}
    chosen = []
    leaks = None
    for name in names:
        if name == "heldout":
            chosen += manifest.clean_heldout()
        elif name in SPLIT_WORDS:
            chosen += [t for t in manifest.tasks if name == "all" or t.split == name]
        elif name in by_name:
            chosen.append(by_name[name])
            leaks = manifest.heldout_leaks() if leaks is None else leaks
            if name in leaks:
                logger.warning("warning: held-out task %s leaks into translator training (%s): its translator "
                               "text is no held-out result", name, leaks[name])
        else:
            close = [n for n in by_name if name.lower() in n.lower()][:3]
            raise Soft2HardError(f"{manifest.root}: no task {name!r} in this DoD"
                                 + (f" (did you mean {', '.join(close)}?)" if close else
                                    "; see 'soft2hard dod show'"))
    chosen = list({t.name: t for t in chosen}.values())[:max_tasks]
    max_chars = manifest.settings.get("max_input_chars")
    items = []
    for entry in chosen:
        best = [p for p in entry.prompts if p.best] or list(entry.prompts)
        if not best:
            raise Soft2HardError(f"{manifest.root}: task {entry.name!r} has no prompt")
        registry_name = entry.inputs_task
        task = planning.restrict_inputs(get_task(registry_name, cache_dir), max_chars)
        if registry_name != entry.name:
            task = replace(task, name=entry.name)
        items.append(EvalTask(task=task, reference=entry.reference, prompt=manifest.load_prompt(best[0]),
                              split_seed=best[0].seed, origin=f"{manifest.root.name}:{best[0].id}",
                              dod_kind=entry.kind))
    return manifest.model, items


def from_prompts(pairs: list[str], cache_dir: Path, model: str, split_seed: int = 0) -> list[EvalTask]:
    """``TASK=PATH`` pairs: a soft prompt file or PEFT adapter per task (split seed from the prompt's metadata)."""
    from soft2hard.prompts import SoftPrompt

    items = []
    for pair in pairs:
        name, sep, path = pair.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise Soft2HardError(f"--prompt takes TASK=PATH, got {pair!r}")
        sp = SoftPrompt.load(Path(path.strip()))
        if sp.model and canonical_model_name(sp.model) != canonical_model_name(model):
            raise Soft2HardError(f"{path}: the prompt was tuned on {sp.model}, not on the source model {model}; "
                                 "pass --model " + sp.model)
        task = get_task(name.strip(), cache_dir)
        seed = sp.metadata.get("seed", split_seed)
        items.append(EvalTask(task=task, reference=task.description, prompt=sp.tensor,
                              split_seed=seed if isinstance(seed, int) else split_seed, origin=str(path)))
    return items


def bare(names: list[str], cache_dir: Path, split_seed: int = 0) -> list[EvalTask]:
    """Tasks without soft prompts (only the conditions that need none can run on them)."""
    items = []
    for name in names:
        task = get_task(name, cache_dir)
        items.append(EvalTask(task=task, reference=task.description, split_seed=split_seed))
    return items
