"""The translator's learning curve (issue 18): held-out quality vs the number of training tasks.

    python scripts/translator_curve.py --sizes 100,300,0 --out runs/curve [--dod A B] [--keep-going]

For each size N (0 = every training task) it trains a translator on a nested seeded subset of N training tasks
(`translator train --max-train-tasks N`, the recipe below, the same validation tasks for every size) and scores
it on the clean held-out tasks (`translator eval --methods translator`). Finished steps are skipped, so a killed
run continues where it stopped. Then it writes `curve.md` (table) and `curve.png` (plot) under --out.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from soft2hard.plots import learning_curve  # noqa: E402

RECIPE = ["--validation-tasks", "60", "--epochs", "4", "--eval-every", "200", "--patience", "3", "--seed", "0"]
COLUMNS = [("general", "rouge_l"), ("general", "cosine"), ("general", "id@1"), ("general:comp", "rouge_l"),
           ("general:comp", "id@1"), ("classification", "class_rate"), ("classification:comp", "class_rate"),
           ("classification:sentence", "class_rate")]


def run(cmd: list[str]) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def value(summary: dict, kind: str, metric: str) -> float | None:
    stats = summary.get(kind, {}).get("translator", {})
    v = stats.get(metric)
    return v["mean"] if isinstance(v, dict) else v


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100,300,0")
    ap.add_argument("--out", type=Path, default=Path("runs/curve"))
    ap.add_argument("--dod", nargs="+", default=["dod/smollm2-135m", "dod/smollm2-135m-comp"])
    args = ap.parse_args()
    exe = [sys.executable, "-m", "soft2hard.cli"]
    rows = []
    for n in [int(s) for s in args.sizes.split(",")]:
        tr, ev = args.out / f"translator-{n or 'all'}", args.out / f"eval-{n or 'all'}"
        if not (tr / "translator.json").exists():
            resume = ["--resume"] if tr.exists() else []
            run([*exe, "translator", "train", "--dod", *args.dod, "--out", str(tr), *RECIPE,
                 "--max-train-tasks", str(n), "--quiet", *resume])
        if not (ev / "summary.json").exists():
            run([*exe, "translator", "eval", "--dod", *args.dod, "--translator", str(tr), "--methods", "translator",
                 "--out", str(ev)])
        meta = json.loads((tr / "translator.json").read_text())
        summary = json.loads((ev / "summary.json").read_text())
        rows.append((len(meta["training_tasks"]), meta, summary))
    rows.sort(key=lambda r: r[0])
    lines = ["| training tasks | examples | steps (best) | " + " | ".join(f"{k} {m}" for k, m in COLUMNS) + " |",
             "|---|---|---|" + "---|" * len(COLUMNS)]
    for n, meta, summary in rows:
        cells = [value(summary, k, m) for k, m in COLUMNS]
        lines.append(f"| {n} | {meta['n_examples']} | {meta['steps']} ({meta['best_step']}) | "
                     + " | ".join("" if c is None else f"{c:.3f}" for c in cells) + " |")
    table = "\n".join(lines)
    (args.out / "curve.md").write_text(table + "\n")
    series = {f"{k} {m}": [(n, value(s, k, m)) for n, _, s in rows if value(s, k, m) is not None] for k, m in COLUMNS}
    learning_curve({k: v for k, v in series.items() if v}, args.out / "curve.png", ylabel="held-out score")
    print(table)


if __name__ == "__main__":
    main()
