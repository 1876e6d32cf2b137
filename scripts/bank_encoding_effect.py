"""How much a bank's encoding changes what a translator reads from its prompts (docs/DOD_CARD.md).

    python scripts/bank_encoding_effect.py --reference dod/smollm2-135m-comp \
        --encoded mixed=runs/comp-mixed int8=runs/comp-int8 [--translator DIR] [--prompts non-best]

Translates the same held-out prompts read from the reference bank (fp16) and from each re-encoded copy with one
translator (greedy, the kind's cue: label lists for classification tasks, instructions otherwise), and prints
per copy: how many prompts changed at all, how many translations changed, and the mean quality (class rate of the
label list, best ROUGE-L against the task's references) next to the reference's. `--prompts non-best` (default)
takes the checkpoints that a *mixed* bank stores in int8; `best` the ones evaluations read.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch  # noqa: E402

from soft2hard.dod.manifest import Manifest  # noqa: E402
from soft2hard.errors import Soft2HardError  # noqa: E402
from soft2hard.interpret.translator import (  # noqa: E402
    KIND_CUE,
    load_translator,
    shipped_translator,
    translate_batch,
)
from soft2hard.metrics import class_rate, rouge_l_score  # noqa: E402
from soft2hard.models import load_model  # noqa: E402


def quality(task, text: str) -> float:
    if task.kind == "classification":
        return class_rate(text, task.labels)
    return max(rouge_l_score(text, ref) for ref in (task.references or (task.reference,)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reference", type=Path, required=True, help="the bank as built (fp16)")
    ap.add_argument("--encoded", nargs="+", required=True, help="NAME=BANK copies of it in other encodings")
    ap.add_argument("--translator", type=Path, default=None, help="translator folder (default: the shipped one)")
    ap.add_argument("--prompts", choices=["non-best", "best"], default="non-best")
    ap.add_argument("--split", choices=["heldout", "train"], default="heldout")
    args = ap.parse_args()
    copies = dict(item.split("=", 1) for item in args.encoded)
    reference = Manifest.load(args.reference)
    tasks = reference.split(args.split)
    chosen = [(t, e) for t in tasks for e in t.prompts if e.best == (args.prompts == "best")]
    if not chosen:
        raise Soft2HardError(f"{args.reference}: no {args.prompts} prompts among the {args.split} tasks")
    lm = load_model(reference.model, device="cpu", amp="bfloat16")
    load_translator(lm, args.translator or shipped_translator(reference.model))

    def read(bank: Manifest) -> tuple[list[torch.Tensor], list[str]]:
        by_id = {e.id: x for _, e, x in bank.iter_prompts(tasks)}
        prompts = [by_id[e.id] for _, e in chosen]
        texts: list[str] = [""] * len(chosen)
        for cue in sorted({KIND_CUE[t.kind] for t, _ in chosen}):  # one batch per cue
            idx = [i for i, (t, _) in enumerate(chosen) if KIND_CUE[t.kind] == cue]
            for i, text in zip(idx, translate_batch(lm, [prompts[i] for i in idx], cue, 48)):
                texts[i] = text
        return prompts, texts

    ref_prompts, ref_texts = read(reference)
    ref_q = [quality(t, x) for (t, _), x in zip(chosen, ref_texts)]
    print(f"{len(chosen)} {args.prompts} prompts of {len({t.name for t, _ in chosen})} {args.split} tasks; "
          f"reference quality {statistics.mean(ref_q):.4f}")
    print("| copy | prompts changed | max relative L2 change | translations changed | quality | difference |")
    print("|---|---|---|---|---|---|")
    for name, path in copies.items():
        prompts, texts = read(Manifest.load(path))
        changed = sum(not torch.equal(a, b) for a, b in zip(prompts, ref_prompts))
        rel = max(float((a - b).norm() / b.norm()) for a, b in zip(prompts, ref_prompts))
        q = [quality(t, x) for (t, _), x in zip(chosen, texts)]
        diff = sum(a != b for a, b in zip(texts, ref_texts))
        print(f"| {name} | {changed} / {len(chosen)} | {rel:.4f} | {diff} / {len(chosen)} | "
              f"{statistics.mean(q):.4f} | {statistics.mean(q) - statistics.mean(ref_q):+.4f} |")


if __name__ == "__main__":
    try:
        main()
    except Soft2HardError as err:
        sys.exit(f"error: {err}")
