"""Compare translators evaluated on the same held-out DoD tasks (``soft2hard translator eval`` folders).

Prints a markdown table per task kind: mean ± std of ROUGE-L and MiniLM cosine for projection, label-free
InSPEcT and each translator, then per-task wins/ties/losses of each translator against the first, and how often a
translator output repeats a training reference almost verbatim (ROUGE-L >= 0.9 against one: memorisation).

Usage: python scripts/translator_compare.py --dod DOD [DOD ...] [--common] [--clean] NAME=EVAL NAME=EVAL ...

EVAL is a ``translator eval`` folder or its ``rows.json`` (e.g. the raw rows committed under docs/data), or
``FILE.json:KEY`` for one run of a file that holds several (``docs/data/scale_translator_rows.json:shipped``).
``--common`` keeps only the tasks every folder scored (translators trained on different tasks have different clean
held-out sets); ``--clean`` keeps only the clean held-out tasks of the ``--dod`` bank(s) (``Manifest.clean_heldout``:
no label named in a training reference, no split group shared with a training task; a ``distilled/T`` prompt
counts as its task ``T``), which restates rows made before the leak audit of issue 19 without rerunning anything.
Classification rows report class rate instead of ROUGE-L.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from soft2hard.dod.manifest import Manifest
from soft2hard.metrics import mean_and_std, rouge_l_score

BASELINES = ("projection", "inspect")
METRICS = ("rouge_l", "cosine")


def mean_std(values: list[float]) -> str:
    mean, std = mean_and_std(values)
    return f"{mean:.3f} ± {std:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("evals", nargs="+", help="NAME=PATH: a translator eval folder, its rows.json, or FILE.json:KEY "
                                             "(one run of a file that holds several, as docs/data does)")
    ap.add_argument("--dod", type=Path, nargs="+", required=True,
                    help="the DoD(s) whose training references count as memorised")
    ap.add_argument("--common", action="store_true", help="only the tasks that every folder scored")
    ap.add_argument("--clean", action="store_true", help="only the clean held-out tasks of the --dod bank(s)")
    args = ap.parse_args()
    runs = {}
    for pair in args.evals:
        name, _, spec = pair.partition("=")
        spec, _, key = spec.partition(".json:")
        path = Path(spec + ".json" if key else spec)
        rows = json.loads((path / "rows.json" if path.is_dir() else path).read_text(encoding="utf-8"))
        runs[name] = rows[key] if key else rows
    manifest = Manifest.load_many(args.dod)
    if args.clean:
        clean = {t.name for t in manifest.clean_heldout()}
        runs = {name: [r for r in run if r["task"].removeprefix("distilled/") in clean] for name, run in runs.items()}
    if args.common:
        shared = set.intersection(*({r["task"] for r in run if r["method"] == "translator"} for run in runs.values()))
        runs = {name: [r for r in run if r["task"] in shared] for name, run in runs.items()}
    train_refs = sorted({t.reference for t in manifest.tasks if t.split == "train"})
    first = next(iter(runs.values()))
    for kind in sorted({r["kind"] for r in first}):
        metrics = ("class_rate", "cosine") if kind.startswith("classification") else METRICS
        def rows(run, method, kind=kind):
            return {r["task"]: r for r in run if r["kind"] == kind and r["method"] == method}

        n = len(rows(first, "translator"))
        print(f"\n**{kind}, {n} held-out prompts**\n")
        print("| method | " + " | ".join(metrics) + " | training reference repeated |")
        print("|---|" + "---|" * (len(metrics) + 1))
        for method in BASELINES:
            sel = list(rows(first, method).values())
            if sel:
                print(f"| {method} | " + " | ".join(mean_std([r[m] for r in sel]) for m in metrics) + " | |")
        for name, run in runs.items():
            sel = list(rows(run, "translator").values())
            copied = sum(max(rouge_l_score(r["text"], ref) for ref in train_refs) >= 0.9 for r in sel)
            print(f"| translator: {name} | " + " | ".join(mean_std([r[m] for r in sel]) for m in metrics)
                  + f" | {copied} of {len(sel)} |")
        base_name, base = next(iter(runs.items()))
        for name, run in list(runs.items())[1:]:
            a, b = rows(base, "translator"), rows(run, "translator")
            for m in metrics:
                diffs = [b[t][m] - a[t][m] for t in sorted(a.keys() & b.keys())]
                wins, losses = sum(d > 1e-9 for d in diffs), sum(d < -1e-9 for d in diffs)
                print(f"\n{name} vs {base_name} on {m}: {wins} wins, {len(diffs) - wins - losses} ties, "
                      f"{losses} losses (mean difference {statistics.fmean(diffs):+.3f})")


if __name__ == "__main__":
    main()
