"""Leak audit of a DoD (issue 19): which held-out tasks are not clean held-out tests of the translator.

A held-out classification task leaks when a training task's target text (any reference, of any kind, or label
set) mentions one of its labels as a word (``plan.heldout_label_leaks``); a held-out task leaks when its split
group under the current grouping (``gen/*`` template families) also holds a training task. Nothing is retrained:
with ``--rows`` (a ``translator eval`` rows.json) the published means are restated on the clean held-out tasks,
from the same rows (a task's rows do not depend on which other tasks are evaluated, so these are the rows that
``translator eval`` on the clean subset, its default now, produces).

Usage: python scripts/leak_audit.py [--dod dod/smollm2-135m] [--rows docs/data/translator_eval_rows.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from soft2hard.dod import plan as planning
from soft2hard.dod.manifest import Manifest

ROOT = Path(__file__).resolve().parents[1]
METRICS = ("rouge_l", "cosine", "class_rate", "label_precision", "label_f1")


def _cell(stats: dict | None, metric: str) -> str:
    if not stats or metric not in stats:
        return ""
    return f"{stats[metric]['mean']:.3f} ± {stats[metric]['std']:.3f}"


def restate(rows: list[dict], clean: set[str]) -> None:
    from soft2hard.interpret.comparison import summarize

    published, restated = summarize(rows), summarize([r for r in rows if r["task"] in clean])
    for kind, methods in published.items():
        metrics = [m for m in METRICS if any(m in s for s in methods.values())]
        n_all = next(iter(methods.values()))["n"]
        n_clean = next(iter(restated.get(kind, {}).values()), {"n": 0})["n"]
        print(f"\n**{kind}: all {n_all} held-out tasks (published) -> {n_clean} clean**\n")
        print("| method | " + " | ".join(metrics) + " |")
        print("|---|" + "---|" * len(metrics))
        for method, s in methods.items():
            clean_s = restated.get(kind, {}).get(method)
            print(f"| {method} | " + " | ".join(f"{_cell(s, m)} -> {_cell(clean_s, m)}" for m in metrics) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dod", type=Path, default=ROOT / "dod" / "smollm2-135m", help="DoD folder or manifest.json")
    ap.add_argument("--rows", type=Path, default=ROOT / "docs" / "data" / "translator_eval_rows.json",
                    help="rows.json of a 'translator eval' of this DoD, restated on the clean tasks ('' to skip)")
    args = ap.parse_args()
    manifest = Manifest.load(args.dod)
    held = manifest.split("heldout")
    leaks = manifest.heldout_leaks()
    by_label = planning.label_leaks(manifest.tasks)

    print(f"{args.dod}: {len(held)} held-out tasks, {len(leaks)} leak into translator training, "
          f"{len(held) - len(leaks)} clean\n")
    print("Held-out labels named in training targets:")
    for label, names in by_label.items():
        print(f"- {label!r}: {len(names)} training tasks: {', '.join(names)}")
    if not by_label:
        print("- none")
    print("\nLeaking held-out tasks:")
    for t in held:
        if t.name in leaks:
            print(f"- [{t.kind}] {t.name}: {leaks[t.name]}")
    for kind in ("general", "classification"):
        n = len(manifest.split("heldout", kind))
        print(f"\n{kind}: {sum(t.name in leaks for t in manifest.split('heldout', kind))} of {n} held-out "
              "tasks leak")
    if args.rows and args.rows.is_file():
        rows = json.loads(args.rows.read_text(encoding="utf-8"))
        print(f"\nPublished held-out means ({args.rows.name}) restated on the clean tasks:")
        restate(rows, {t.name for t in held if t.name not in leaks})


if __name__ == "__main__":
    main()
