"""The interpretable-prompt comparison table of docs/OPTIMIZE.md.

For each task: the soft prompt (accuracy), two controls that say what *any* text can do on this model (no
prompt at all, and a few-shot text of balanced training demonstrations), hand-written prompts from ``--texts``,
the translator's text for the soft prompt (``--translator``, default the shipped one), and every point of the
``soft2hard optimize --sweep`` runs found under ``--sweeps`` (PEZ and/or RLPrompt): test accuracy of the text
before the input, faithfulness to the soft prompt (agreement, mean KL of the label distributions), perplexity
under SmolLM2, word validity and degenerate flags.

Usage:  python scripts/optimize_table.py --sweeps runs/pez_sweep --prompts runs/table \
            [--texts examples/handwritten_prompts.jsonl] gen/number_parity gen/word_sentiment
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from soft2hard.faithfulness import compare_label_distributions, label_distributions, scrutability  # noqa: E402
from soft2hard.interpret.translator import load_translator, shipped_translator  # noqa: E402
from soft2hard.models import load_model  # noqa: E402
from soft2hard.prompts import SoftPrompt  # noqa: E402
from soft2hard.scoring import score  # noqa: E402
from soft2hard.tasks import get_task  # noqa: E402


def accuracy(task, probs, examples) -> float:
    labels = list(task.labels)
    return float(sum(labels[i] == ex.target for i, ex in zip(probs.argmax(-1).tolist(), examples)) / len(examples))


def few_shot_text(task, train, shots: int) -> str:
    """``shots`` training demonstrations in the task's own template, labels taken in turn (balanced, seedless:
    the first training example of each label in split order)."""
    pools = {label: [ex for ex in train if ex.target == label] for label in task.labels}
    demos = [pools[label][i // len(pools)] for i, label in zip(range(shots), list(task.labels) * shots)]
    return "\n".join(task.format_input(ex.input) + task.format_target(ex.target) for ex in demos)


def text_row(lm, task, soft_probs, method: str, text: str | None, test) -> dict:
    """Accuracy, faithfulness to the soft prompt and scrutability of one text (None: no prompt at all)."""
    probs = label_distributions(lm, task, test, text=text)
    row = {"task": task.name, "method": method, "text": text or "", "accuracy": accuracy(task, probs, test)}
    row |= {f"faithfulness_{k}": v for k, v in compare_label_distributions(soft_probs, probs).items()}
    return row | (scrutability(lm, text) if text else {})


def cell(row: dict, key: str, fmt: str = "{:.3f}") -> str:
    return fmt.format(row[key]) if row.get(key) is not None else ""


def load_texts(path: Path | None) -> dict[str, list[dict]]:
    """``{"task": T, "method": NAME, "text": TEXT}`` lines, grouped by task."""
    grouped: dict[str, list[dict]] = {}
    for line in path.read_text().splitlines() if path else []:
        if line.strip():
            entry = json.loads(line)
            grouped.setdefault(entry["task"], []).append(entry)
    return grouped


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("tasks", nargs="+")
    p.add_argument("--sweeps", type=Path, nargs="+", required=True, help="folders holding <task_slug>/sweep.json")
    p.add_argument("--prompts", type=Path, required=True, help="folder of tune runs named like runs/table/gen__plural")
    p.add_argument("--max-examples", type=int, default=64)
    p.add_argument("--shots", type=int, default=4, help="demonstrations in the few-shot text control")
    p.add_argument("--texts", type=Path, default=None, help="JSONL of hand-written prompts: task, method, text")
    p.add_argument("--out", type=Path, default=None, help="also write the rows as JSON here")
    p.add_argument("--translator", type=Path, default=None, help="translator folder (default: the shipped one)")
    args = p.parse_args()
    lm = load_model("smollm2-135m", device="cpu")
    translator = load_translator(load_model("smollm2-135m", device="cpu"),
                                 args.translator or shipped_translator("smollm2-135m"))
    handwritten = load_texts(args.texts)
    rows = []
    for name in args.tasks:
        task = get_task(name)
        splits = task.splits(seed=0)
        test = splits.test[: args.max_examples]
        soft = SoftPrompt.load(args.prompts / name.replace("/", "__")).tensor
        soft_probs = label_distributions(lm, task, test, prompt=soft)
        rows.append({"task": name, "method": "soft prompt", "text": "", "accuracy": score(lm, soft, task, test)})
        texts = [("no prompt", None), (f"few-shot text ({args.shots})", few_shot_text(task, splits.train, args.shots)),
                 *[(entry["method"], entry["text"]) for entry in handwritten.get(name, [])],
                 *[(f"translator ({cue})", translator.translate([soft], cue=cue)[0].text)
                   for cue in ("instruction", "labels")]]
        rows.extend(text_row(lm, task, soft_probs, method, text, test) for method, text in texts)
        for folder in args.sweeps:
            sweep = folder / name.replace("/", "_") / "sweep.json"
            if not sweep.exists():
                continue
            for r in json.loads(sweep.read_text()):
                rows.append({"task": name, "method": f"{r['method']} w={r['weight']:g}", "text": r["text"],
                             "accuracy": accuracy(task, label_distributions(lm, task, test, text=r["text"]), test),
                             "accuracy_as_ids": r["test_score"],
                             "faithfulness_agreement": r.get("faithfulness_agreement"),
                             "faithfulness_mean_kl": r.get("faithfulness_mean_kl"),
                             "perplexity": r["perplexity"], "word_validity": r["word_validity"],
                             "degenerate": r["degenerate"]})
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))
    print("| task | prompt | accuracy (text) | agreement with soft prompt | KL | perplexity | words | flags | text |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        text = r["text"].replace("|", "\\|").replace("\n", " ")
        print(f"| {r['task']} | {r['method']} | {cell(r, 'accuracy')} | {cell(r, 'faithfulness_agreement')} | "
              f"{cell(r, 'faithfulness_mean_kl')} | {cell(r, 'perplexity', '{:.0f}')} | "
              f"{cell(r, 'word_validity', '{:.2f}')} | {', '.join(r.get('degenerate') or [])} | `{text}` |")


if __name__ == "__main__":
    main()
