"""The numbers of the DoD data card (docs/DOD_CARD.md): what the committed banks hold.

    python scripts/dod_card.py dod/smollm2-135m dod/smollm2-135m-comp

Prints markdown: tasks and prompts per bank, split and kind; per family of compositional tasks (with the input
level, the soft prompts' mean test score against no prompt); prompt lengths; and the training tasks a translator
trained on all the banks leaves out because they would leak into a held-out task (issue 18).
"""

from __future__ import annotations

import argparse
import collections
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from soft2hard.dod.manifest import Manifest, without_leaking_training  # noqa: E402
from soft2hard.tasks import categories, compositional  # noqa: E402


def family(name: str) -> str:
    if categories.of_large_inventory(name):
        return "cat (163-category inventory)"
    parts = name.split("/")
    return "/".join(parts[:2]) if parts[0] in ("comp", "bigbench") else parts[0]


def level(name: str) -> str:
    if name.startswith(compositional.PREFIX):
        return compositional.level_of(name)
    return "word" if name.startswith("cat/") else "text"


def mean(values) -> str:
    values = [v for v in values if v is not None]
    return f"{statistics.fmean(values):.2f}" if values else ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dod", type=Path, nargs="+")
    args = ap.parse_args()
    print("| bank | split | kind | tasks | prompts |\n|---|---|---|---|---|")
    for path in args.dod:
        m = Manifest.load(path)
        for (split, kind), tasks in sorted(collections.Counter((t.split, t.kind) for t in m.tasks).items()):
            sel = [t for t in m.tasks if (t.split, t.kind) == (split, kind)]
            print(f"| {path} | {split} | {kind} | {tasks} | {sum(len(t.prompts) for t in sel)} |")
    combined = Manifest.load_many(args.dod)
    print(f"\nAll banks: {len(combined.tasks)} tasks, {sum(len(t.prompts) for t in combined.tasks)} prompts.\n")
    print("| family | level | kind | train tasks | held-out tasks | prompts | paraphrases per task | "
          "test score (no prompt -> prompt) |\n|---|---|---|---|---|---|---|---|")
    by_family = collections.defaultdict(list)
    for t in combined.tasks:
        by_family[family(t.name)].append(t)
    for fam, tasks in sorted(by_family.items()):
        kinds = "/".join(sorted({t.kind for t in tasks}))
        n_train = sum(t.split == "train" for t in tasks)
        refs = mean(len(t.references or (t.reference,)) for t in tasks)
        print(f"| {fam} | {level(tasks[0].name)} | {kinds} | {n_train} | {len(tasks) - n_train} | "
              f"{sum(len(t.prompts) for t in tasks)} | {refs} | {mean(t.baseline_score for t in tasks)} -> "
              f"{mean(t.test_score for t in tasks)} |")
    lengths = collections.Counter(tensor.shape[0] for _, _, tensor in combined.iter_prompts())
    steps = collections.Counter(e.step for t in combined.tasks for e in t.prompts)
    seeds = collections.Counter(len({e.seed for e in t.prompts}) for t in combined.tasks)
    print("\nPrompt lengths (virtual tokens: prompts): " + ", ".join(f"{k}: {v}" for k, v in sorted(lengths.items())))
    print("Checkpoint steps (step: prompts): " + ", ".join(f"{k}: {v}" for k, v in sorted(steps.items())))
    print("Seeds per task (seeds: tasks): " + ", ".join(f"{k}: {v}" for k, v in sorted(seeds.items())))
    kept, dropped = without_leaking_training(combined)
    print(f"\nTraining on all banks together leaves out {len(dropped)} training tasks that would leak into a held-out "
          "task of another bank:")
    for name, why in sorted(dropped.items()):
        print(f"- `{name}`: {why}")
    print(f"\nLeft for translator training: {len(kept.split('train'))} tasks, "
          f"{sum(len(t.prompts) for t in kept.split('train'))} prompts; held-out: {len(kept.split('heldout'))} tasks.")


if __name__ == "__main__":
    main()
