"""InSPEcT on SmolLM2: (A) descriptions of checkpoints along training vs task accuracy, (B) label-free vs oracle
InSPEcT vs projection on tasks that calibration never saw. Writes markdown + JSON + a plot under --out.

Usage:
  python scripts/inspect_study.py checkpoints --out runs/inspect_study gen/word_sentiment gen/number_parity ...
  python scripts/inspect_study.py unseen --out runs/inspect_study --calibrate RUN [RUN ...] --evaluate RUN [...]
Work already done (tuning runs, per-prompt grids) is reused, so an interrupted study resumes.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from soft2hard import atomic
from soft2hard.interpret.base import Description
from soft2hard.interpret.inspection import DEMOS, InspectConfig, inspect_grid
from soft2hard.interpret.projection import project
from soft2hard.interpret.selection import mean_pair_scores, parse_layers, reference_text, score_texts
from soft2hard.metrics import class_rate, mean_and_std, pearson, spearman
from soft2hard.models import load_model
from soft2hard.prompts import SoftPrompt
from soft2hard.scoring import score
from soft2hard.tasks import get_task
from soft2hard.tuning import TuningConfig, tune


def grid_texts(lm, prompt_path: Path, cfg: InspectConfig, cache: Path) -> list[Description]:
    """The grid's descriptions for one prompt, cached as JSON next to the study."""
    if cache.exists():
        return [Description(d["text"], "inspect", tuple(d["layers"])) for d in json.loads(cache.read_text())]
    prompt = SoftPrompt.load(prompt_path).tensor
    descs = inspect_grid(lm, prompt, cfg, progress=True)
    atomic.write_json(cache, [{"layers": list(d.layers), "text": d.text} for d in descs])
    return descs


def repeats_demo(text: str) -> bool:
    t = text.lower()
    return any(d.lower() in t or (labels.lower() in t and len(labels) > 8) for d, labels in DEMOS)


def study_checkpoints(args, lm, cfg) -> None:
    rows = []
    for name in args.tasks:
        task = get_task(name)
        run = args.out / "runs" / name.replace("/", "__")
        if not (run / "metrics.json").exists():
            tune(lm, task, TuningConfig(steps=args.steps, eval_every=args.eval_every, seed=0), run, resume=True)
        test = task.splits(seed=0).test[:200]
        for ckpt in sorted((run / "checkpoints").iterdir()):
            step = int(ckpt.name.split("_")[1])
            prompt = SoftPrompt.load(ckpt / "prompt").tensor
            acc = score(lm, prompt, task, test)
            descs = grid_texts(lm, ckpt / "prompt", cfg, args.out / "grids" / f"{run.name}__{ckpt.name}.json")
            rates = [class_rate(d.text, task.labels) for d in descs]
            best = max(range(len(descs)), key=lambda i: rates[i])
            rows.append({"task": name, "step": step, "accuracy": acc, "mean_class_rate": sum(rates) / len(rates),
                         "oracle_class_rate": rates[best], "oracle_pair": list(descs[best].layers),
                         "oracle_text": descs[best].text,
                         "demo_repeat_rate": sum(map(repeats_demo, (d.text for d in descs))) / len(descs)})
            print(f"{name} step {step}: acc {acc:.3f} mean class rate {rows[-1]['mean_class_rate']:.3f}", flush=True)
    atomic.write_json(args.out / "checkpoints.json", rows)
    lines = ["| task | step | test accuracy | mean class rate (grid) | oracle class rate | oracle pair | oracle text |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        text = r["oracle_text"].replace("|", "/")[:70]
        lines.append(f"| `{r['task']}` | {r['step']} | {r['accuracy']:.3f} | {r['mean_class_rate']:.3f} | "
                     f"{r['oracle_class_rate']:.2f} | {r['oracle_pair'][0]}->{r['oracle_pair'][1]} | {text} |")
    lines += ["", "| task | Pearson(acc, mean class rate) | Spearman | Pearson(acc, oracle class rate) | Spearman |",
              "|---|---|---|---|---|"]
    for name in [*args.tasks, "all"]:
        sel = [r for r in rows if name == "all" or r["task"] == name]
        acc = [r["accuracy"] for r in sel]
        mean_cr = [r["mean_class_rate"] for r in sel]
        ora_cr = [r["oracle_class_rate"] for r in sel]
        lines.append(f"| {name} | {pearson(acc, mean_cr):.3f} | {spearman(acc, mean_cr):.3f} | "
                     f"{pearson(acc, ora_cr):.3f} | {spearman(acc, ora_cr):.3f} |")
    demo = mean_and_std([r["demo_repeat_rate"] for r in rows])[0]
    lines.append(f"\nShare of grid descriptions that repeat an inspection demo: {demo:.3f}")
    (args.out / "checkpoints.md").write_text("\n".join(lines) + "\n")
    _plot_checkpoints(rows, args.tasks, args.out / "checkpoints.png")
    print("\n".join(lines))


def _plot_checkpoints(rows, tasks, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(tasks), figsize=(4 * len(tasks), 3.2), squeeze=False)
    for ax, name in zip(axes[0], tasks):
        sel = [r for r in rows if r["task"] == name]
        steps = [r["step"] for r in sel]
        ax.plot(steps, [r["accuracy"] for r in sel], "o-", label="test accuracy")
        ax.plot(steps, [r["mean_class_rate"] for r in sel], "s-", label="mean class rate (grid)")
        ax.plot(steps, [r["oracle_class_rate"] for r in sel], "^--", label="oracle class rate")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("training step")
        ax.set_ylim(-0.05, 1.05)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def study_unseen(args, lm, cfg) -> None:
    def items(paths):
        out = []
        for p in paths:
            prompt = SoftPrompt.load(p)
            task = get_task(prompt.metadata["task"])
            out.append((p, prompt, task))
        return out

    calib, evals = items(args.calibrate), items(args.evaluate)
    overlap = {t.name for _, _, t in calib} & {t.name for _, _, t in evals}
    assert not overlap, f"calibration and evaluation share tasks: {overlap}"
    grids = {p: grid_texts(lm, p, cfg, args.out / "grids" / f"{p.name}.json") for p, _, _ in calib + evals}
    start = time.time()
    # label-free calibration, as `soft2hard inspect calibrate` does it, from the cached grids
    means = mean_pair_scores([(grids[p], reference_text(t), t.labels) for p, _, t in calib], args.metric)
    best_pair = sorted(means, key=lambda k: (-means[k], k))[0]
    rows = []
    for p, prompt, task in evals:
        ref = reference_text(task)
        descs = grids[p]
        rouge = score_texts([d.text for d in descs], ref, "rouge_l")
        oracle = descs[max(range(len(descs)), key=lambda i: rouge[i])]
        label_free = next(d for d in descs if d.layers == best_pair)
        proj = project(lm, prompt.tensor, "cosine")
        for method, text in [("projection", proj.text), ("InSPEcT label-free", label_free.text),
                             ("InSPEcT oracle (best of grid vs reference)", oracle.text)]:
            row = {"task": task.name, "method": method, "text": text,
                   "rouge_l": score_texts([text], ref, "rouge_l")[0],
                   "cosine": score_texts([text], ref, "embedding_cosine")[0],
                   "class_rate": class_rate(text, task.labels) if task.labels else None}
            rows.append(row)
    atomic.write_json(args.out / "unseen.json", {"calibration": [str(p) for p, _, _ in calib],
                                                 "label_free_pair": list(best_pair), "rows": rows})
    lines = [f"Label-free pair chosen on {len(calib)} calibration prompts by mean {args.metric}: "
             f"{best_pair[0]}->{best_pair[1]} ({time.time() - start:.0f} s)", "",
             "| task | method | ROUGE-L | MiniLM cosine | class rate | text |", "|---|---|---|---|---|---|"]
    for r in rows:
        cr = f"{r['class_rate']:.2f}" if r["class_rate"] is not None else "-"
        lines.append(f"| `{r['task']}` | {r['method']} | {r['rouge_l']:.3f} | {r['cosine']:.3f} | {cr} | "
                     f"{r['text'].replace('|', '/')[:70]} |")
    lines += ["", "| method | mean ROUGE-L (± sd) | mean cosine (± sd) | mean class rate |", "|---|---|---|---|"]
    for method in dict.fromkeys(r["method"] for r in rows):
        sel = [r for r in rows if r["method"] == method]
        rl, rls = mean_and_std([r["rouge_l"] for r in sel])
        co, cos = mean_and_std([r["cosine"] for r in sel])
        cr = mean_and_std([r["class_rate"] for r in sel if r["class_rate"] is not None])[0]
        lines.append(f"| {method} | {rl:.3f} ± {rls:.3f} | {co:.3f} ± {cos:.3f} | {cr:.3f} |")
    (args.out / "unseen.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("part", choices=["checkpoints", "unseen"])
    ap.add_argument("tasks", nargs="*")
    ap.add_argument("--out", type=Path, default=Path("runs/inspect_study"))
    ap.add_argument("--sources", default="1-29")
    ap.add_argument("--targets", default="1-29")
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--eval-every", type=int, default=15)
    ap.add_argument("--calibrate", nargs="*", type=Path, default=[])
    ap.add_argument("--evaluate", nargs="*", type=Path, default=[])
    ap.add_argument("--metric", default="rouge_l")
    ap.add_argument("--amp", default="none", choices=["none", "bfloat16"])
    args = ap.parse_intermixed_args()
    lm = load_model("smollm2-135m", device="cpu", amp=args.amp)
    cfg = InspectConfig(source_layers=parse_layers(args.sources), target_layers=parse_layers(args.targets))
    args.out.mkdir(parents=True, exist_ok=True)
    (study_checkpoints if args.part == "checkpoints" else study_unseen)(args, lm, cfg)


if __name__ == "__main__":
    main()
