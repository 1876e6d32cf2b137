"""Tune soft prompts on several tasks and print a markdown table (used for docs/RESULTS.md).

Usage: python scripts/tuning_table.py --out runs/table --steps 150 TASK [TASK ...]
Finished tasks (with metrics.json) are reused, so an interrupted table resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from soft2hard.models import load_model
from soft2hard.tasks import get_task
from soft2hard.tuning import TuningConfig, tune


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("tasks", nargs="+")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--out", type=Path, default=Path("runs/table"))
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--tokens", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    lm = load_model(args.model, device="cpu")
    rows = []
    for name in args.tasks:
        run = args.out / name.replace("/", "__")
        if (run / "metrics.json").exists():
            metrics = json.loads((run / "metrics.json").read_text())
            wall = metrics.get("wall_seconds")
        else:
            start = time.time()
            cfg = TuningConfig(n_tokens=args.tokens, steps=args.steps, seed=args.seed)
            metrics = tune(lm, get_task(name), cfg, run, resume=True).metrics
            wall = round(time.time() - start, 1)
            metrics["wall_seconds"] = wall
            (run / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
        rows.append((name, metrics, wall))
    print("| task | kind | metric | no prompt | soft prompt | gain (points) | steps | test n | train s | wall s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, m, wall in rows:
        gain = 100 * (m["test_score"] - m["baseline_score"])
        print(f"| `{name}` | {m['kind']} | {m['metric']} | {m['baseline_score']:.3f} | {m['test_score']:.3f} | "
              f"{gain:+.1f} | {m['steps']} | {m['n_test']} | {m['train_seconds']:.0f} | {wall} |")


if __name__ == "__main__":
    main()
