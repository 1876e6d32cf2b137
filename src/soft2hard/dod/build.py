"""``soft2hard dod build``: train soft prompts for many tasks, fanned out with Ray, resumable per task.

Layout of a build folder:
    plan.json                 the settings and the planned tasks (reference, labels, split); written once
    runs/<task>/seed<k>/      one ordinary ``tune`` run each (checkpoints, PEFT adapter, metrics.json)
    manifest.json             derived from plan + finished runs; rewritten (atomically) after every run
A run counts as finished when its ``metrics.json`` exists (``tune`` writes it last). Rerunning the build skips
finished runs and resumes unfinished ones from their newest checkpoint, so a kill loses at most the steps since
that checkpoint. Workers are Ray actors that load the model once and tune one prompt at a time; ``--address``
sends the same build to an existing Ray cluster, ``workers=0`` runs in this process without Ray.

Packs (``pack`` > 1, the default): the jobs are cut, in job order and per split, into fixed units of ``pack *
PACK_UNIT`` jobs; a worker trains a unit with :func:`soft2hard.packs.tune_many` (``pack`` prompts per model pass,
a finished job's slot taken by the next) and journals it under ``packs/``, so that a resumed unit replays
bit-identically. Distillation runs train alone. A multi-node cluster needs the build folder on a filesystem that
every node sees at the same path.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import time
from dataclasses import asdict
from pathlib import Path

from tqdm.auto import tqdm

from soft2hard import atomic, runs
from soft2hard.dod import DEFAULT_PACK
from soft2hard.dod import plan as planning
from soft2hard.dod.config import PLAN_NAME, BuildConfig, load_or_create_plan
from soft2hard.dod.manifest import MANIFEST_NAME, SPLITS, Manifest, PromptEntry, TaskEntry
from soft2hard.errors import Soft2HardError
from soft2hard.tuning import TuningConfig

logger = logging.getLogger(__name__)
PACK_DIR = "packs"
PACK_UNIT = 4  # a unit of work holds pack * PACK_UNIT jobs, so a pack refills 3 times per unit


def run_dir(out: Path, task: str, seed: int) -> Path:
    return Path(out) / "runs" / task.replace("/", "__") / f"seed{seed}"


def jobs_for(planned: list[planning.PlannedTask], cfg: BuildConfig) -> list[tuple[planning.PlannedTask, int]]:
    return [(t, seed) for t in planned for seed in (cfg.seeds if t.split == "train" else cfg.seeds[:1])]


def job_order(jobs: list[tuple[planning.PlannedTask, int]]) -> list[tuple[planning.PlannedTask, int]]:
    """Held-out runs first (evaluation needs them all), then training runs seed by seed (every task's first
    prompt before any task's second), alternating between kinds, so that a build stopped early is still a
    balanced DoD over as many tasks as it got to."""
    seeds = list(dict.fromkeys(s for _, s in jobs))  # the configured order
    by_kind: dict[str, list] = {}
    for job in sorted(jobs, key=lambda j: seeds.index(j[1])):  # stable: plan order within a seed
        if job[0].split == "train":
            by_kind.setdefault(job[0].kind, []).append(job)
    queues = list(by_kind.values())
    interleaved = [q[i] for i in range(max(map(len, queues), default=0)) for q in queues if i < len(q)]
    return [j for j in jobs if j[0].split != "train"] + interleaved


def is_finished(out: Path, task: str, seed: int) -> bool:
    return (run_dir(out, task, seed) / "metrics.json").is_file()


def _task_entry(out: Path, t: planning.PlannedTask, seeds: list[int]) -> TaskEntry | None:
    prompts, tests, baselines, metric = [], [], [], None
    for seed in seeds:
        rd = run_dir(out, t.name, seed)
        metrics = json.loads((rd / "metrics.json").read_text(encoding="utf-8"))
        tests.append(metrics["test_score"])
        baselines.append(metrics["baseline_score"])
        metric = metrics.get("metric")
        for v in metrics["validation"]:
            ckpt = runs.checkpoint_dir(rd, v["step"]) / "prompt"
            if ckpt.is_dir():
                prompts.append(PromptEntry(id=f"{t.name}@seed{seed}/step{v['step']}",
                                           file=str(ckpt.relative_to(out)), seed=seed, step=v["step"],
                                           validation_score=v["score"], best=v["step"] == metrics["best_step"]))
    if not prompts:
        return None
    return TaskEntry(name=t.name, kind=t.kind, group=t.group, split=t.split, reference=t.reference,
                     reference_source=t.reference_source, labels=t.labels, prompts=tuple(prompts), inputs=t.inputs,
                     references=t.references,
                     test_score=sum(tests) / len(tests), baseline_score=sum(baselines) / len(baselines), metric=metric)


def finished_job_entries(out: Path, cfg: BuildConfig, planned: list[planning.PlannedTask]):
    """((task, seed), one-job :class:`TaskEntry`) for each finished job of a build folder, in plan order (what
    :func:`soft2hard.dod.bank.append_shard` packs)."""
    for t, seed in jobs_for(planned, cfg):
        if is_finished(out, t.name, seed):
            entry = _task_entry(out, t, [seed])
            if entry is not None:
                yield (t.name, seed), entry


def write_manifest(out: Path, cfg: BuildConfig, planned: list[planning.PlannedTask]) -> Manifest:
    """Derive manifest.json from the plan and the finished runs (atomic)."""
    entries = []
    for t in planned:
        seeds = [s for _, s in jobs_for([t], cfg) if is_finished(out, t.name, s)]
        entry = _task_entry(out, t, seeds) if seeds else None
        if entry is not None:
            entries.append(entry)
    settings = {**json.loads(json.dumps(asdict(cfg))), "planned_tasks": len(planned)}
    manifest = Manifest(root=Path(out), model=cfg.model, tasks=entries, settings=settings)
    atomic.write_json(Path(out) / MANIFEST_NAME, manifest.to_dict())
    return manifest


class _Runner:
    """Tunes DoD prompts with a model loaded once (used in-process and as a Ray actor): one run at a time
    (:meth:`run`) or a unit of jobs in packs (:meth:`run_pack`)."""

    def __init__(self, model: str, cache_dir: str, amp: str, threads: int | None, root: str | None = None,
                 device: str = "auto", dtype: str = "float32") -> None:
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.model, self.cache_dir, self.amp, self.device, self.dtype = model, Path(cache_dir), amp, device, dtype
        if root is not None and not (Path(root) / PLAN_NAME).is_file():
            raise Soft2HardError(f"worker on {socket.gethostname()} cannot see {Path(root) / PLAN_NAME}: a "
                                 "multi-node Ray cluster needs the build folder on a shared filesystem, mounted at "
                                 "the same path on every node")
        self.lm = None

    def _model(self):
        from soft2hard.models import load_model

        if self.lm is None:
            self.lm = load_model(self.model, device=self.device, dtype=self.dtype, cache_dir=self.cache_dir,
                                 amp=self.amp)
        return self.lm

    def _task(self, task_name: str, max_input_chars: int | None, inputs: str | None):
        from soft2hard.tasks import get_task

        return planning.restrict_inputs(get_task(inputs or task_name, self.cache_dir), max_input_chars)

    def run(self, task_name: str, seed: int, out: str, cfg_dict: dict, max_input_chars: int | None,
            inputs: str | None = None, teacher_prompt: str | None = None) -> str:
        from soft2hard.tuning import tune

        lm = self._model()
        task = self._task(task_name, max_input_chars, inputs)
        cfg = {**cfg_dict, "seed": seed}
        if teacher_prompt:  # a distilled prompt: compress the text, on the teacher's own continuations
            cfg.update(objective="distill", teacher_prompt=teacher_prompt, distill_targets="teacher")
        tune(lm, task, TuningConfig(**cfg), Path(out), resume=True, progress=False)
        return task_name

    def run_pack(self, specs: list[tuple], pack: int, journal: str) -> list[tuple[str, str | None]]:
        """Train a unit of (task-objective) jobs, ``pack`` at a time; returns (task, error or None) per job."""
        from soft2hard.packs import TuningJob, tune_many

        lm = self._model()
        jobs = [TuningJob(lambda a=a: self._task(a[0], a[4], a[5]), TuningConfig(**{**a[3], "seed": a[1]}),
                          Path(a[2]), name=f"{a[0]}@seed{a[1]}") for a in specs]
        outcomes = tune_many(lm, jobs, pack=pack, resume=True, journal=Path(journal), progress=False)
        return [(a[0], o.error) for a, o in zip(specs, outcomes)]


def pack_units(jobs: list[tuple[planning.PlannedTask, int]], pack: int, workers: int = 1
               ) -> list[list[tuple[planning.PlannedTask, int]]]:
    """Units of work, cut from the job order per split: at most ``pack * PACK_UNIT`` jobs, and small enough that
    every worker gets one. They do not depend on what is finished, so a rerun of the same command gives a unit
    the same jobs and its packs replay exactly."""
    units = []
    for split in sorted(SPLITS, key=lambda x: x == "train"):  # held-out units first
        part = [j for j in jobs if j[0].split == split]
        size = max(1, min(pack * PACK_UNIT, -(-len(part) // max(1, workers))))
        units += [part[i:i + size] for i in range(0, len(part), size)]
    return units


def _journal_path(out: Path, unit: list[tuple[planning.PlannedTask, int]], pack: int) -> Path:
    key = hashlib.sha1(json.dumps([pack, [[t.name, s] for t, s in unit]]).encode()).hexdigest()[:16]
    return Path(out) / PACK_DIR / f"unit-{key}.json"


def build(out: Path, cfg: BuildConfig, cache_dir: Path, workers: int = 1, address: str | None = None,
          progress: bool = True, max_jobs: int | None = None, only_split: str | None = None,
          pack: int = DEFAULT_PACK, device: str = "auto", dtype: str = "float32",
          bank: Path | None = None) -> Manifest:
    """Plan (or reload the plan), run every unfinished (task, seed) job, keep manifest.json current.

    Args:
        workers: Ray actors tuning in parallel (0: in this process, no Ray).
        address: an existing Ray cluster (``ray://host:port`` or ``auto``); default starts a local one.
        max_jobs: stop after this many jobs (for timing and for tests of resumption).
        only_split: run only the unfinished jobs of this split now (a later call does the rest).
        pack: prompts trained per model pass (1: one ``tune`` run per job, as before packs).
        device, dtype: where and in which weight dtype the workers load the model (how, not what, is built:
            like ``workers`` and ``pack`` they are not part of the stored plan).
        bank: a sharded bank of this build (:mod:`soft2hard.dod.bank`): its jobs count as finished, and an
            empty ``out`` takes its plan, so a build resumes on a machine where the old ``runs/`` is gone.
    """
    if not isinstance(pack, int) or isinstance(pack, bool) or pack < 1:
        raise Soft2HardError(f"--pack must be a positive integer, got {pack!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic.remove_stale(out)
    banked: set[tuple[str, int]] = set()
    if bank is not None and (Path(bank) / PLAN_NAME).is_file():
        from soft2hard.dod.bank import banked_jobs

        if not (out / PLAN_NAME).exists():
            atomic.write_json(out / PLAN_NAME, atomic.read_json(Path(bank) / PLAN_NAME))
        banked = banked_jobs(Path(bank))
    planned = load_or_create_plan(out, cfg, cache_dir)
    ordered = job_order(jobs_for(planned, cfg))
    pending = [(t, s) for t, s in ordered if (t.name, s) not in banked and not is_finished(out, t.name, s)
               and only_split in (None, t.split)]
    total = len(ordered)
    if max_jobs is not None:
        pending = pending[:max_jobs]
    logger.info("DoD %s: %d tasks planned, %d runs, %d to do", out, len(planned), total, len(pending))
    partial = max_jobs is not None or only_split is not None  # the bar counts this call's runs only
    bar = tqdm(total=len(pending) if partial else total, initial=0 if partial else total - len(pending),
               desc="dod build", unit="prompt", disable=not progress, dynamic_ncols=True)
    failures: list[str] = []
    t0 = time.time()

    def finished(name: str, error: str | None = None, update_manifest: bool = True) -> None:
        if error:
            failures.append(f"{name}: {error}")
            bar.write(f"failed: {name}: {error}") if progress else logger.warning("failed: %s: %s", name, error)
        if update_manifest:
            write_manifest(out, cfg, planned)
        bar.update(1)
        bar.set_postfix_str(name[-40:])

    def spec(t: planning.PlannedTask, s: int) -> tuple:
        return (t.name, s, str(run_dir(out, t.name, s)), cfg.tuning_config(s, t.name).__dict__, cfg.max_input_chars,
                t.inputs, t.teacher_prompt)

    todo = set(pending)
    items: list[tuple[str, tuple, list[bool]]] = []  # (runner method, its arguments, which jobs this call counts)
    if pack > 1:
        # jobs of one prompt length together: a pack trains prompts of one length at a time
        packable = sorted((j for j in ordered if j[0].teacher_prompt is None),
                          key=lambda j: cfg.tuning_config(j[1], j[0].name).n_tokens)
        for unit in pack_units(packable, pack, workers):
            if not todo & set(unit):
                continue
            if max_jobs is not None or any((t.name, s) in banked for t, s in unit):
                # a cut unit has its own journal (and replays only as cut)
                unit = [j for j in unit if j in todo]
            counted = [j in todo for j in unit]
            todo -= set(unit)
            items.append(("run_pack", ([spec(*j) for j in unit], pack, str(_journal_path(out, unit, pack))),
                          counted))
    items += [("run", spec(t, s), [True]) for t, s in pending if (t, s) in todo]

    def item_done(item, result, error: str | None = None) -> None:
        method, args, counted = item
        names = [a[0] for a in args[0]] if method == "run_pack" else [args[0]]
        errors = [error] * len(names) if error is not None else \
            [err for _, err in result] if method == "run_pack" else [None]
        for name, err, count in zip(names, errors, counted):
            if count:
                finished(name, err, update_manifest=False)
        write_manifest(out, cfg, planned)

    if workers == 0:
        runner = _Runner(cfg.model, str(cache_dir), cfg.amp, None, device=device, dtype=dtype)
        for item in items:
            try:
                item_done(item, getattr(runner, item[0])(*item[1]))
            except Soft2HardError as err:
                item_done(item, None, str(err))
    else:
        _run_with_ray(items, cfg, cache_dir, workers, address, item_done, out, device, dtype)
    bar.close()
    manifest = write_manifest(out, cfg, planned)
    logger.info("built %d runs in %.0f s", len(pending) - len(failures), time.time() - t0)
    if failures:
        raise Soft2HardError(f"{len(failures)} DoD run(s) failed (rerun to retry); first: {failures[0]}")
    return manifest


def _run_with_ray(items: list[tuple], cfg: BuildConfig, cache_dir: Path, workers: int, address: str | None,
                  item_done, out: Path, device: str, dtype: str) -> None:
    try:
        import ray
    except ImportError:
        raise Soft2HardError("Ray is not installed: pip install 'ray>=2.9' (or use --workers 0)") from None
    if workers < 1:
        raise Soft2HardError("--workers must be >= 0")
    started_here = not ray.is_initialized()
    if started_here:
        init = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
        if address:
            ray.init(address=address, **init)
        else:
            ray.init(num_cpus=max(workers, os.cpu_count() or 1), **init)
    threads = max(1, (os.cpu_count() or 1) // workers) if not address else None
    actor = ray.remote(num_cpus=1)(_Runner)
    pool = [actor.remote(cfg.model, str(cache_dir), cfg.amp, threads, str(Path(out).resolve()), device, dtype)
            for _ in range(min(workers, len(items)))]
    queue = list(items)
    running: dict = {}

    def submit(runner) -> None:
        if queue:
            item = queue.pop(0)
            running[getattr(runner, item[0]).remote(*item[1])] = (runner, item)

    try:
        for runner in pool:
            submit(runner)
        while running:
            done, _ = ray.wait(list(running), num_returns=1)
            runner, item = running.pop(done[0])
            try:
                result = ray.get(done[0])
            except (ray.exceptions.RayTaskError, ray.exceptions.RayActorError) as err:
                cause = err.cause if isinstance(getattr(err, "cause", None), Exception) else err
                message = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
                if isinstance(err, ray.exceptions.RayActorError) or "cannot see" in message:
                    raise Soft2HardError(message) from None  # a worker that cannot work at all stops the build
                item_done(item, None, message)
            else:
                item_done(item, result)
            submit(runner)
    finally:
        for runner in pool:
            ray.kill(runner)
        if started_here:
            ray.shutdown()
