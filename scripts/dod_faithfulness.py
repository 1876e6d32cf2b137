"""distillation faithfulness of every distilled prompt in a DoD build, next to the no-prompt baseline.

Reads each distilled run's metrics.json (``soft2hard dod build --kinds ...,distilled``): greedy agreement with the
teacher and mean KL per answer token on the task's test inputs, with the soft prompt and with no prompt.

Usage: python scripts/dod_faithfulness.py runs/dod/distill [--rows]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from soft2hard import atomic
from soft2hard.dod.build import run_dir
from soft2hard.dod.config import PLAN_NAME


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dod", type=Path)
    ap.add_argument("--rows", action="store_true", help="one markdown row per prompt as well")
    args = ap.parse_args()
    rows = []
    for task in atomic.read_json(args.dod / PLAN_NAME)["tasks"]:
        path = run_dir(args.dod, task["name"], 0) / "metrics.json"
        if task["kind"] != "distilled" or not path.exists():
            continue
        m = json.loads(path.read_text(encoding="utf-8"))
        rows.append({"task": task["inputs"], "split": task["split"], "text": task["teacher_prompt"],
                     "agree": m["faithfulness"]["agreement"], "agree0": m["faithfulness_no_prompt"]["agreement"],
                     "kl": m["faithfulness"]["mean_kl"], "kl0": m["faithfulness_no_prompt"]["mean_kl"], "n": m["n_test"]})
    if args.rows:
        print("| inputs | split | teacher prompt | agreement: no prompt | agreement: soft prompt | "
              "mean KL: no prompt | mean KL: soft prompt | test n |")
        print("|---|---|---|---|---|---|---|---|")
        for r in rows:
            text = r["text"] if len(r["text"]) <= 70 else r["text"][:67] + "..."
            print(f"| `{r['task']}` | {r['split']} | {text} | {r['agree0']:.3f} | {r['agree']:.3f} | {r['kl0']:.3f} | "
                  f"{r['kl']:.3f} | {r['n']} |")
        print()

    def mean(key):
        return statistics.fmean(r[key] for r in rows)

    print(f"{len(rows)} distilled prompts: agreement {mean('agree0'):.3f} (no prompt) -> {mean('agree'):.3f} "
          f"(soft prompt); mean KL {mean('kl0'):.3f} -> {mean('kl'):.3f}")
    print(f"KL lower with the soft prompt for {sum(r['kl'] < r['kl0'] for r in rows)} of {len(rows)}; agreement "
          f"higher for {sum(r['agree'] > r['agree0'] for r in rows)}, equal for "
          f"{sum(r['agree'] == r['agree0'] for r in rows)}, lower for {sum(r['agree'] < r['agree0'] for r in rows)}")


if __name__ == "__main__":
    main()
