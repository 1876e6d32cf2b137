"""Compare two ``soft2hard evaluate`` runs of the same tasks, condition by condition (docs/DEPLOY.md).

    python scripts/deploy_compare.py docs/data/downstream21_results.json runs/downstream-ship/results.json

For every model (target or source) and condition that both runs have: the mean score over the common tasks in
each run, how many cells are identical, per-task wins/losses of the second run, and on the source model the
mean faithfulness (agreement, KL) of each text. Conditions that did not change (e.g. zero-shot) should come out
identical: that checks that the two runs scored the same examples the same way.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def cells(path: Path) -> dict[tuple[str, str, str], dict]:
    rows = json.loads(path.read_text())
    rows = rows if isinstance(rows, list) else rows["rows"]
    return {(r["model"], r["task"], r["condition"]): r for r in rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("first", type=Path, help="results.json of the first run")
    ap.add_argument("second", type=Path, help="results.json of the second run")
    args = ap.parse_args()
    first, second = cells(args.first), cells(args.second)
    common = sorted(first.keys() & second.keys())
    for model in sorted({m for m, _, _ in common}):
        print(model)
        for condition in sorted({c for m, _, c in common if m == model}):
            keys = [k for k in common if k[0] == model and k[2] == condition]
            a = [first[k]["score"] for k in keys]
            b = [second[k]["score"] for k in keys]
            same = sum(abs(x - y) < 1e-9 for x, y in zip(a, b))
            wins, losses = sum(y > x + 1e-9 for x, y in zip(a, b)), sum(y < x - 1e-9 for x, y in zip(a, b))
            line = (f"  {condition:<22} tasks {len(keys):>3}  first {statistics.mean(a):.3f}  second "
                    f"{statistics.mean(b):.3f}  identical {same}  second wins/losses {wins}/{losses}")
            faith = [(first[k].get("faithfulness"), second[k].get("faithfulness"), first[k].get("faithfulness_kl"),
                      second[k].get("faithfulness_kl")) for k in keys]
            if faith and all(v is not None for row in faith for v in row):
                fa, fb, ka, kb = (statistics.mean(col) for col in zip(*faith))
                line += f"  agreement {fa:.3f} -> {fb:.3f}, KL {ka:.3f} -> {kb:.3f}"
            print(line)


if __name__ == "__main__":
    main()
