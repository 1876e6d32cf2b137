"""Pack a DoD build into a compact bank: one fp16 safetensors file plus a manifest that points into it.

A build folder holds full ``tune`` runs (optimizer states, fp32 checkpoints): hundreds of MB. The bank keeps
only the prompts (fp16 halves them again; a 20 x 576 prompt is 23 KB), so a built DoD can be committed and
carried to another machine. Its manifest has the same format; entries carry ``key`` into ``prompts.safetensors``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from soft2hard import atomic
from soft2hard.dod.config import PLAN_NAME
from soft2hard.dod.manifest import MANIFEST_NAME, Manifest
from soft2hard.errors import Soft2HardError
from soft2hard.provenance import provenance

BANK_FILE = "prompts.safetensors"


def pack(manifest: Manifest, out: Path, best_only: bool = False) -> Manifest:
    """Write ``out/prompts.safetensors`` (fp16) and ``out/manifest.json``; returns the packed manifest."""
    out = Path(out)
    if out.resolve() == manifest.root.resolve():
        raise Soft2HardError(f"{out}: pack into a new folder, not the build folder itself")
    tensors: dict[str, torch.Tensor] = {}
    tasks = []
    for task in manifest.tasks:
        entries = []
        for entry in task.prompts:
            if best_only and not entry.best:
                continue
            tensors[entry.id] = manifest.load_prompt(entry).to(torch.float16)
            entries.append(replace(entry, file=BANK_FILE, key=entry.id))
        if entries:
            tasks.append(replace(task, prompts=tuple(entries)))
    if not tensors:
        raise Soft2HardError(f"{manifest.root}: the DoD has no finished prompts to pack")
    packed = Manifest(root=out, model=manifest.model, tasks=tasks,
                      settings={**manifest.settings, "packed_from": str(manifest.root), "dtype": "float16",
                                "best_only": best_only, "provenance": provenance()})
    atomic.save_tensors(out / BANK_FILE, tensors, {"format": "pt"})
    atomic.write_json(out / MANIFEST_NAME, packed.to_dict())  # last: its presence marks a complete bank
    return packed


# --- sharded banks ----------------------------------------------------------------------------------------
# A bank that grows while its build runs: ``plan.json`` (the build's plan, copied once) and ``shards/NNNNN.json``
# + ``shards/NNNNN.safetensors``, one pair per `dod pack --append`. A shard holds finished jobs (task, seed) that
# no earlier shard holds; shards are never rewritten, so a committed bank grows by whole files and git history
# holds each prompt once. Its json is written last: its presence marks a complete shard.

SHARD_DIR = "shards"
SHARD_FORMAT, SHARD_VERSION = "soft2hard-dod-shard", 1


def _shard_files(bank: Path) -> list[Path]:
    return sorted((Path(bank) / SHARD_DIR).glob("[0-9]" * 5 + ".json"))


def _read_shard(path: Path) -> list[dict]:
    data = atomic.read_json(path)
    if not isinstance(data, dict) or data.get("format") != SHARD_FORMAT or data.get("version") != SHARD_VERSION:
        raise Soft2HardError(f"{path}: not a soft2hard DoD shard (format {SHARD_FORMAT!r} version {SHARD_VERSION})")
    jobs = data.get("jobs")
    if not isinstance(jobs, list) or not all(isinstance(j, dict) and isinstance(j.get("seed"), int) and
                                             isinstance(j.get("task"), dict) for j in jobs):
        raise Soft2HardError(f"{path}: 'jobs' must be a list of objects with a 'task' entry and an integer 'seed'")
    return jobs


def is_sharded(path: Path) -> bool:
    return (Path(path) / SHARD_DIR).is_dir() and not (Path(path) / MANIFEST_NAME).exists()


def banked_jobs(bank: Path) -> set[tuple[str, int]]:
    """The (task, seed) jobs that the bank's shards hold."""
    return {(job["task"]["name"], job["seed"]) for f in _shard_files(bank) for job in _read_shard(f)}


def append_shard(build_dir: Path, bank: Path, job_entries, best_only: bool = False) -> Path | None:
    """Add one shard with the finished jobs of ``build_dir`` that ``bank`` lacks; None when there are none.

    ``job_entries`` is an iterable of ((task, seed), :class:`TaskEntry` of that one job), in plan order (from
    :func:`soft2hard.dod.build.finished_job_entries`). The bank's plan must be the build's plan. ``best_only``
    keeps each job's best checkpoint only (a job with none marked keeps them all)."""
    bank, build_dir = Path(bank), Path(build_dir)
    plan_src, plan_dst = build_dir / PLAN_NAME, bank / PLAN_NAME
    if not plan_src.is_file():
        raise Soft2HardError(f"{build_dir}: no {PLAN_NAME} (not a DoD build folder)")
    if plan_dst.exists() and atomic.read_json(plan_dst) != atomic.read_json(plan_src):
        raise Soft2HardError(f"{bank} holds another build's plan: append shards of that build only, or use a new bank")
    have = banked_jobs(bank) if bank.exists() else set()
    tensors: dict[str, torch.Tensor] = {}
    jobs = []
    index = len(_shard_files(bank)) if bank.exists() else 0
    name = f"{index:05d}"
    build_manifest = Manifest(root=build_dir, model="", tasks=[], settings={})
    for (task, seed), entry in job_entries:
        if (task, seed) in have:
            continue
        prompts = []
        kept = [p for p in entry.prompts if p.best] if best_only else []
        for p in kept or entry.prompts:
            tensors[p.id] = build_manifest.load_prompt(p).to(torch.float16)
            prompts.append(replace(p, file=f"{SHARD_DIR}/{name}.safetensors", key=p.id).to_dict())
        jobs.append({"seed": seed, "task": {**entry.to_dict(), "prompts": prompts}})
    if not jobs:
        return None
    (bank / SHARD_DIR).mkdir(parents=True, exist_ok=True)
    if not plan_dst.exists():
        atomic.write_json(plan_dst, atomic.read_json(plan_src))
    atomic.save_tensors(bank / SHARD_DIR / f"{name}.safetensors", tensors, {"format": "pt"})
    atomic.write_json(bank / SHARD_DIR / f"{name}.json", {"format": SHARD_FORMAT, "version": SHARD_VERSION,
                                                          "jobs": jobs, "provenance": provenance()})
    return bank / SHARD_DIR / f"{name}.json"


def load_sharded(bank: Path) -> Manifest:
    """The manifest of a sharded bank: one task entry per task, its jobs' prompts together (scores averaged)."""
    from soft2hard.dod.manifest import parse_task

    bank = Path(bank)
    plan = atomic.read_json(bank / PLAN_NAME) if (bank / PLAN_NAME).is_file() else None
    if not isinstance(plan, dict) or not isinstance(plan.get("settings"), dict):
        raise Soft2HardError(f"{bank}: a sharded bank needs its build's {PLAN_NAME}")
    merged: dict[str, list] = {}
    shards = _shard_files(bank)
    for f in shards:
        for i, job in enumerate(_read_shard(f)):
            merged.setdefault(job["task"].get("name"), []).append(parse_task(job["task"], f"{f} job {i}"))
    if not merged:
        raise Soft2HardError(f"{bank}: no shards yet (add one with 'soft2hard dod pack BUILD --append {bank}')")
    tasks = []
    for entries in merged.values():
        first = entries[0]
        scores = {k: [getattr(e, k) for e in entries if getattr(e, k) is not None]
                  for k in ("test_score", "baseline_score")}
        tasks.append(replace(first, prompts=tuple(p for e in entries for p in e.prompts),
                             **{k: sum(v) / len(v) if v else None for k, v in scores.items()}))
    settings = {**plan["settings"], "dtype": "float16", "shards": len(shards)}
    return Manifest(root=bank, model=str(plan["settings"].get("model")), tasks=tasks, settings=settings)
