"""Summarise a ``soft2hard evaluate`` folder for docs/DEPLOY.md: what the verified translation buys.

Per target: the mean score of each condition, translator_selected against the greedy translator (ratio of means)
and against the reference instruction, per-task wins/ties/losses of the text conditions against few_shot and
induced, and on the source model the faithfulness of the selected and the greedy translation to the soft prompt,
measured on test inputs (selection only ever saw validation inputs).

Usage: python scripts/deploy_summary.py runs/downstream21
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

VERSUS = ("few_shot", "induced")
TEXTS = ("translator", "translator_selected", "translator+few_shot", "reference", "reference+few_shot", "inspect",
         "induced", "zero_shot")


def wins(a: dict[str, float], b: dict[str, float]) -> str:
    diffs = [a[t] - b[t] for t in a.keys() & b.keys()]
    w, losses = sum(d > 1e-9 for d in diffs), sum(d < -1e-9 for d in diffs)
    return f"{w}/{len(diffs) - w - losses}/{losses}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    args = ap.parse_args()
    rows = json.loads((args.folder / "results.json").read_text(encoding="utf-8"))
    texts = json.loads((args.folder / "texts.json").read_text(encoding="utf-8"))
    for model in dict.fromkeys(r["model"] for r in rows if r["condition"] != "soft_prompt"):
        score = {}
        for r in rows:
            if r["model"] == model and r["score"] is not None:
                score.setdefault(r["condition"], {})[r["task"]] = r["score"]
        mean = {c: statistics.fmean(v.values()) for c, v in score.items()}
        print(f"\n### {model}: {len(score.get('zero_shot', {}))} tasks\n")
        sel, greedy, ref = (mean.get(c, float("nan")) for c in ("translator_selected", "translator", "reference"))
        ratio = f"{sel / greedy:.2f}x" if greedy else "undefined (greedy mean 0)"
        print(f"- translator_selected {sel:.3f} vs translator {greedy:.3f} ({ratio}); reference {ref:.3f}")
        print("\n| condition | mean | vs few_shot (W/T/L) | vs induced (W/T/L) |\n|---|---:|---|---|")
        for c in TEXTS:
            if c in score:
                print(f"| {c} | {mean[c]:.3f} | " + " | ".join(
                    wins(score[c], score[v]) if v in score and v != c else "–" for v in VERSUS) + " |")
    print("\n### faithfulness to the soft prompt on the source model (test inputs)\n")
    print("| text | agreement | mean KL | tasks |\n|---|---:|---:|---:|")
    for c in ("translator", "translator_selected", "reference", "inspect", "induced"):
        got = [e["texts"][c] for e in texts.values() if c in e.get("texts", {})
               and e["texts"][c].get("faithfulness") is not None]
        if got:
            agree = statistics.fmean(g["faithfulness"] for g in got)
            kl = statistics.fmean(g["faithfulness_kl"] for g in got if g.get("faithfulness_kl") is not None)
            print(f"| {c} | {agree:.3f} | {kl:.3f} | {len(got)} |")
    entries = [e["texts"] for e in texts.values() if "translator_selected" in e.get("texts", {})]
    if entries:
        chosen = [e["translator_selected"] for e in entries]
        origins: dict[str, int] = {}
        for c in chosen:  # translator:sample:3 -> translator:sample
            kind = ":".join((c.get("selected") or "none").split(":")[:2])
            origins[kind] = origins.get(kind, 0) + 1
        verified = sum(bool(c.get("verified")) for c in chosen)
        same = sum(e["translator_selected"].get("text") == e.get("translator", {}).get("text") for e in entries)
        secs = [c["seconds"] for c in chosen if c.get("seconds") is not None]
        print(f"\nselection: {verified} of {len(chosen)} verified (more faithful than no text on validation "
              f"inputs); {same} kept the greedy text; winners {origins}"
              + (f"; median {statistics.median(secs):.1f} s per prompt" if secs else ""))

if __name__ == "__main__":
    main()
