"""Compare two ``soft2hard evaluate`` runs of the same tasks, condition by condition (docs/DEPLOY.md).

    python scripts/deploy_compare.py docs/data/downstream21_results.json runs/downstream-ship/results.json

For every model (target or source) and condition that both runs have: the mean score over their common tasks
in each run, how many task scores are identical, and the second run's per-task wins/ties/losses. Conditions
that did not change (e.g. zero-shot) should come out identical: that checks that the two runs scored the same
examples the same way. Faithfulness to the soft prompt: `scripts/deploy_summary.py` on each run's folder.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from deploy_summary import wins  # the sibling script (scripts/ is on sys.path when run as above)


def scores(path: Path) -> dict[tuple[str, str], dict[str, float]]:
    """(model, condition) -> {task: score} of an ``evaluate`` run's results.json."""
    out: dict[tuple[str, str], dict[str, float]] = {}
    for r in json.loads(path.read_text(encoding="utf-8")):
        if r["score"] is not None:
            out.setdefault((r["model"], r["condition"]), {})[r["task"]] = r["score"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("first", type=Path, help="results.json of the first run")
    ap.add_argument("second", type=Path, help="results.json of the second run")
    args = ap.parse_args()
    first, second = scores(args.first), scores(args.second)
    for model, condition in sorted(first.keys() & second.keys()):
        tasks = first[model, condition].keys() & second[model, condition].keys()
        a = {t: first[model, condition][t] for t in tasks}
        b = {t: second[model, condition][t] for t in tasks}
        same = sum(abs(a[t] - b[t]) < 1e-9 for t in tasks)
        print(f"{model:<20} {condition:<22} tasks {len(tasks):>3}  first {statistics.fmean(a.values()):.3f}  "
              f"second {statistics.fmean(b.values()):.3f}  identical {same}  second vs first W/T/L {wins(b, a)}")


if __name__ == "__main__":
    main()
