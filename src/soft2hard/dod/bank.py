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
from soft2hard.dod.manifest import MANIFEST_NAME, Manifest
from soft2hard.errors import Soft2HardError

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
                                "best_only": best_only})
    atomic.save_tensors(out / BANK_FILE, tensors, {"format": "pt"})
    atomic.write_json(out / MANIFEST_NAME, packed.to_dict())  # last: its presence marks a complete bank
    return packed
