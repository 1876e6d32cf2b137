"""Pack a DoD build into a compact bank: one safetensors file plus a manifest that points into it.

A build folder holds full ``tune`` runs (optimizer states, fp32 checkpoints): hundreds of MB. The bank keeps
only the prompts, in fp16 (a 20 x 576 prompt is 23 KB), int8 with one fp32 scale per prompt token (12 KB; its
effect on translation is measured in docs/DOD_CARD.md), or *mixed*: each run's best checkpoint in fp16 (the
prompt that evaluations read, so their figures do not move) and its other checkpoints in int8. A built DoD can
so be committed and carried to another machine. Its manifest has the same format; entries carry ``key`` into ``prompts.safetensors``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from soft2hard import atomic
from soft2hard.dod.config import PLAN_NAME
from soft2hard.dod.manifest import MANIFEST_NAME, Manifest
from soft2hard.errors import Soft2HardError
from soft2hard.prompts import _read_safetensors
from soft2hard.provenance import provenance

BANK_FILE = "prompts.safetensors"
ENCODINGS = ("float16", "int8", "mixed")
SCALE_SUFFIX = ".scale"  # an int8 prompt ``key`` has its per-token scales under ``key + SCALE_SUFFIX``


def check_encoding(encoding: str) -> str:
    if encoding not in ENCODINGS:
        raise Soft2HardError(f"encoding {encoding!r} is not one of {', '.join(ENCODINGS)}")
    return encoding


def prompt_encoding(encoding: str, best: bool, job_has_best: bool) -> str:
    """How one prompt of a job is stored under a bank ``encoding``: ``mixed`` keeps the job's best checkpoint
    (every checkpoint, when none is marked) in fp16 and the others in int8."""
    if check_encoding(encoding) != "mixed":
        return encoding
    return "float16" if best or not job_has_best else "int8"


def kept_prompts(best: list[bool], best_only: bool, encoding: str) -> list[tuple[int, str]]:
    """(index, how it is stored) for the prompts of one job, given which are its best checkpoint: all of them, or
    with ``best_only`` the best one (all, when none is marked); ``how`` from :func:`prompt_encoding`."""
    job_has_best = any(best)
    keep = [i for i, b in enumerate(best) if b] if best_only and job_has_best else range(len(best))
    return [(i, prompt_encoding(encoding, best[i], job_has_best)) for i in keep]


def encode_prompt(key: str, tensor: torch.Tensor, encoding: str) -> dict[str, torch.Tensor]:
    """The bank tensors of one ``[n, d]`` prompt: fp16, or symmetric int8 per token row (absmax / 127) with the
    row scales in fp32. Per-row scales matter: a prompt's rows differ in norm by an order of magnitude."""
    tensor = tensor.detach().float()
    if check_encoding(encoding) == "mixed":
        raise Soft2HardError("a single prompt is stored as float16 or int8 (see prompt_encoding)")
    if encoding == "float16":
        return {key: tensor.to(torch.float16)}
    scale = tensor.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / 127.0
    return {key: torch.round(tensor / scale).clamp(-127, 127).to(torch.int8), key + SCALE_SUFFIX: scale}


def decode_prompt(tensors: dict[str, torch.Tensor], key: str) -> torch.Tensor:
    """The float32 prompt stored under ``key`` by :func:`encode_prompt` (raw as-is for a float tensor)."""
    tensor = tensors[key]
    if tensor.is_floating_point():
        return tensor.float()
    if tensor.dtype != torch.int8:
        raise Soft2HardError(f"prompt {key!r} is stored as {tensor.dtype}, neither a float type nor int8")
    scale = tensors.get(key + SCALE_SUFFIX)
    if scale is None or scale.shape != (tensor.shape[0], 1):
        raise Soft2HardError(f"int8 prompt {key!r} has no [n, 1] scale tensor {key + SCALE_SUFFIX!r}")
    return tensor.float() * scale.float()


def pack(manifest: Manifest, out: Path, best_only: bool = False, encoding: str = "float16") -> Manifest:
    """Write ``out/prompts.safetensors`` (``encoding``) and ``out/manifest.json``; returns the packed manifest."""
    check_encoding(encoding)
    out = Path(out)
    if out.resolve() == manifest.root.resolve():
        raise Soft2HardError(f"{out}: pack into a new folder, not the build folder itself")
    tensors: dict[str, torch.Tensor] = {}
    tasks = []
    for task in manifest.tasks:
        stored_as: dict[str, str] = {}  # prompt id -> encoding, for the prompts kept; a job is (task, seed)
        for seed in dict.fromkeys(e.seed for e in task.prompts):
            job = [e for e in task.prompts if e.seed == seed]
            stored_as.update((job[i].id, how) for i, how in kept_prompts([e.best for e in job], best_only, encoding))
        entries = []
        for entry in task.prompts:
            if entry.id in stored_as:
                tensors.update(encode_prompt(entry.id, manifest.load_prompt(entry), stored_as[entry.id]))
                entries.append(replace(entry, file=BANK_FILE, key=entry.id))
        if entries:
            tasks.append(replace(task, prompts=tuple(entries)))
    if not tensors:
        raise Soft2HardError(f"{manifest.root}: the DoD has no finished prompts to pack")
    packed = Manifest(root=out, model=manifest.model, tasks=tasks,
                      settings={**manifest.settings, "packed_from": str(manifest.root), "dtype": encoding,
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
    return _read_shard_file(path)["jobs"]


def _read_shard_file(path: Path) -> dict:
    data = atomic.read_json(path)
    if not isinstance(data, dict) or data.get("format") != SHARD_FORMAT or data.get("version") != SHARD_VERSION:
        raise Soft2HardError(f"{path}: not a soft2hard DoD shard (format {SHARD_FORMAT!r} version {SHARD_VERSION})")
    jobs = data.get("jobs")
    if not isinstance(jobs, list) or not all(isinstance(j, dict) and isinstance(j.get("seed"), int) and
                                             isinstance(j.get("task"), dict) for j in jobs):
        raise Soft2HardError(f"{path}: 'jobs' must be a list of objects with a 'task' entry and an integer 'seed'")
    data.setdefault("encoding", "float16")  # shards written before other encodings existed are fp16
    if data["encoding"] not in ENCODINGS:
        raise Soft2HardError(f"{path}: encoding {data['encoding']!r} is not one of {', '.join(ENCODINGS)}")
    return data


def is_sharded(path: Path) -> bool:
    return (Path(path) / SHARD_DIR).is_dir() and not (Path(path) / MANIFEST_NAME).exists()


def banked_jobs(bank: Path) -> set[tuple[str, int]]:
    """The (task, seed) jobs that the bank's shards hold."""
    return {(job["task"]["name"], job["seed"]) for f in _shard_files(bank) for job in _read_shard(f)}


def append_shard(build_dir: Path, bank: Path, job_entries, best_only: bool = False,
                 encoding: str = "float16") -> Path | None:
    """Add one shard with the finished jobs of ``build_dir`` that ``bank`` lacks; None when there are none.

    ``job_entries`` is an iterable of ((task, seed), :class:`TaskEntry` of that one job), in plan order (from
    :func:`soft2hard.dod.build.finished_job_entries`). The bank's plan must be the build's plan. ``best_only``
    keeps each job's best checkpoint only (a job with none marked keeps them all); ``encoding`` is the shard's
    (see :func:`encode_prompt`; shards of one bank may differ)."""
    check_encoding(encoding)
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
        for i, how in kept_prompts([p.best for p in entry.prompts], best_only, encoding):
            p = entry.prompts[i]
            tensors.update(encode_prompt(p.id, build_manifest.load_prompt(p), how))
            prompts.append(replace(p, file=f"{SHARD_DIR}/{name}.safetensors", key=p.id).to_dict())
        jobs.append({"seed": seed, "task": {**entry.to_dict(), "prompts": prompts}})
    if not jobs:
        return None
    (bank / SHARD_DIR).mkdir(parents=True, exist_ok=True)
    if not plan_dst.exists():
        atomic.write_json(plan_dst, atomic.read_json(plan_src))
    _write_shard(bank, name, jobs, tensors, encoding)
    return bank / SHARD_DIR / f"{name}.json"


def _write_shard(bank: Path, name: str, jobs: list[dict], tensors: dict, encoding: str, **extra) -> None:
    atomic.save_tensors(bank / SHARD_DIR / f"{name}.safetensors", tensors, {"format": "pt"})
    atomic.write_json(bank / SHARD_DIR / f"{name}.json",  # last: its presence marks a complete shard
                      {"format": SHARD_FORMAT, "version": SHARD_VERSION, "encoding": encoding, "jobs": jobs,
                       **extra, "provenance": provenance()})


def reencode_bank(src: Path, out: Path, encoding: str, best_only: bool = False) -> list[Path]:
    """A copy of the sharded bank ``src`` in ``out``, shard by shard, with its prompts in ``encoding`` (and only
    each job's best checkpoint with ``best_only``): the way to shrink a committed bank without giving up its
    plan, so a build can still resume from and append to the copy. Resumable: finished shards are skipped."""
    check_encoding(encoding)
    src, out = Path(src), Path(out)
    if not is_sharded(src):
        raise Soft2HardError(f"{src}: not a sharded bank (re-encode a bank made by 'dod pack --append')")
    if out.resolve() == src.resolve():
        raise Soft2HardError(f"{out}: re-encode into a new folder, not the bank itself")
    plan = atomic.read_json(src / PLAN_NAME)
    if (out / PLAN_NAME).exists() and atomic.read_json(out / PLAN_NAME) != plan:
        raise Soft2HardError(f"{out} holds another build's plan: re-encode into an empty folder")
    written = []
    for f in _shard_files(src):
        if (out / SHARD_DIR / f.name).exists():
            continue
        stored = _read_safetensors(f.with_suffix(".safetensors"))
        tensors: dict[str, torch.Tensor] = {}
        jobs = []
        for job in _read_shard(f):
            prompts = job["task"]["prompts"]
            kept = kept_prompts([bool(p.get("best")) for p in prompts], best_only, encoding)
            for i, how in kept:
                key = prompts[i].get("key")
                if key not in stored:
                    raise Soft2HardError(f"{f}: no tensor {key!r} in its safetensors file")
                tensors.update(encode_prompt(key, decode_prompt(stored, key), how))
            jobs.append({**job, "task": {**job["task"], "prompts": [prompts[i] for i, _ in kept]}})
        (out / SHARD_DIR).mkdir(parents=True, exist_ok=True)
        if not (out / PLAN_NAME).exists():
            atomic.write_json(out / PLAN_NAME, plan)
        _write_shard(out, f.stem, jobs, tensors, encoding, reencoded_from=f"{src}/{SHARD_DIR}/{f.name}")
        written.append(out / SHARD_DIR / f.name)
    return written


def load_sharded(bank: Path) -> Manifest:
    """The manifest of a sharded bank: one task entry per task, its jobs' prompts together (scores averaged)."""
    from soft2hard.dod.manifest import parse_task

    bank = Path(bank)
    plan = atomic.read_json(bank / PLAN_NAME) if (bank / PLAN_NAME).is_file() else None
    if not isinstance(plan, dict) or not isinstance(plan.get("settings"), dict):
        raise Soft2HardError(f"{bank}: a sharded bank needs its build's {PLAN_NAME}")
    merged: dict[str, list] = {}
    shards = _shard_files(bank)
    encodings = set()
    for f in shards:
        data = _read_shard_file(f)
        encodings.add(data["encoding"])
        for i, job in enumerate(data["jobs"]):
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
    settings = {**plan["settings"], "dtype": "+".join(sorted(encodings)), "shards": len(shards)}
    return Manifest(root=bank, model=str(plan["settings"].get("model")), tasks=tasks, settings=settings)
