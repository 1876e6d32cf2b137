"""Distil instructions into soft prompts on SmolLM2 and print faithfulness next to the no-prompt baseline.

Each generated task's own description (which states the rule) is the teacher prompt; the task supplies inputs.
Usage: python scripts/distill_table.py --out runs/distill --steps 80 gen/plural gen/antonym ...
Finished runs (metrics.json present) are reused.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from soft2hard.models import load_model
from soft2hard.tasks import get_task
from soft2hard.tuning import TuningConfig, tune


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("tasks", nargs="+")
    ap.add_argument("--out", type=Path, default=Path("runs/distill"))
    ap.add_argument("--steps", type=int, default=80)
    ap.add_argument("--tokens", type=int, default=20)
    args = ap.parse_args()
    lm = load_model("smollm2-135m", device="cpu")
    print("| teacher prompt (= task description) | inputs | agreement: no prompt | agreement: soft prompt | "
          "mean KL: no prompt | mean KL: soft prompt | test n |")
    print("|---|---|---|---|---|---|---|")
    for name in args.tasks:
        task = get_task(name)
        run = args.out / name.replace("/", "__")
        if (run / "metrics.json").exists():
            m = json.loads((run / "metrics.json").read_text())
        else:
            cfg = TuningConfig(n_tokens=args.tokens, steps=args.steps, eval_every=args.steps, seed=0,
                               objective="distill", teacher_prompt=task.description, max_test_examples=60)
            m = tune(lm, task, cfg, run, resume=True, progress=False).metrics
        f, f0 = m["faithfulness"], m["faithfulness_no_prompt"]
        print(f"| {task.description} | `{name}` | {f0['agreement']:.3f} | {f['agreement']:.3f} | "
              f"{f0['mean_kl']:.3f} | {f['mean_kl']:.3f} | {m['n_test']} |", flush=True)


if __name__ == "__main__":
    main()
