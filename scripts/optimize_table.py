"""The interpretable-prompt comparison table of docs/OPTIMIZE.md.

For each task: the soft prompt (accuracy), the shipped translator's text for it, and every point of the
``soft2hard optimize --sweep`` runs found under ``--sweeps`` (PEZ and/or RLPrompt): test accuracy of the text
before the input, faithfulness to the soft prompt (agreement, mean KL of the label distributions), perplexity
under SmolLM2, word validity and degenerate flags.

Usage:  python scripts/optimize_table.py --sweeps runs/pez_sweep --prompts runs/table \
            gen/number_parity gen/word_sentiment bigbench/multiemo/all_sentence_en
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from soft2hard.faithfulness import faithfulness, label_distributions, scrutability  # noqa: E402
from soft2hard.interpret.translator import load_translator, shipped_translator  # noqa: E402
from soft2hard.models import load_model  # noqa: E402
from soft2hard.prompts import SoftPrompt  # noqa: E402
from soft2hard.scoring import score  # noqa: E402
from soft2hard.tasks import get_task  # noqa: E402


def text_accuracy(lm, task, text, examples) -> float:
    probs = label_distributions(lm, task, examples, text=text)
    labels = list(task.labels)
    return float(sum(labels[i] == ex.target for i, ex in zip(probs.argmax(-1).tolist(), examples)) / len(examples))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("tasks", nargs="+")
    p.add_argument("--sweeps", type=Path, nargs="+", required=True, help="folders holding <task_slug>/sweep.json")
    p.add_argument("--prompts", type=Path, required=True, help="folder of tune runs named like runs/table/gen__plural")
    p.add_argument("--max-examples", type=int, default=64)
    p.add_argument("--out", type=Path, default=None, help="also write the rows as JSON here")
    args = p.parse_args()
    lm = load_model("smollm2-135m", device="cpu")
    translator = load_translator(load_model("smollm2-135m", device="cpu"), shipped_translator("smollm2-135m"))
    rows = []
    for name in args.tasks:
        task = get_task(name)
        test = task.splits(seed=0).test[: args.max_examples]
        soft = SoftPrompt.load(args.prompts / name.replace("/", "__")).tensor
        rows.append({"task": name, "method": "soft prompt", "text": "", "accuracy": score(lm, soft, task, test)})
        for cue in ("instruction", "labels"):
            text = translator.translate([soft], cue=cue)[0].text
            rows.append({"task": name, "method": f"translator ({cue})", "text": text,
                         "accuracy": text_accuracy(lm, task, text, test),
                         **{f"faithfulness_{k}": v for k, v in faithfulness(lm, soft, text, task, test).items()},
                         **scrutability(lm, text)})
        for folder in args.sweeps:
            sweep = folder / name.replace("/", "_") / "sweep.json"
            if not sweep.exists():
                continue
            for r in json.loads(sweep.read_text()):
                rows.append({"task": name, "method": f"{r['method']} w={r['weight']:g}", "text": r["text"],
                             "accuracy": text_accuracy(lm, task, r["text"], test),
                             "accuracy_as_ids": r["test_score"],
                             "faithfulness_agreement": r.get("faithfulness_agreement"),
                             "faithfulness_mean_kl": r.get("faithfulness_mean_kl"),
                             "perplexity": r["perplexity"], "word_validity": r["word_validity"],
                             "degenerate": r["degenerate"]})
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))
    print("| task | prompt | accuracy (text) | agreement with soft prompt | KL | perplexity | words | flags | text |")
    print("|---|---|---|---|---|---|---|---|---|")
    def cell(r: dict, key: str, fmt: str = "{:.3f}") -> str:
        return fmt.format(r[key]) if r.get(key) is not None else ""

    for r in rows:
        def f(key, fmt="{:.3f}", r=r):
            return cell(r, key, fmt)
        text = r["text"].replace("|", "\\|").replace("\n", " ")
        print(f"| {r['task']} | {r['method']} | {f('accuracy')} | {f('faithfulness_agreement')} | "
              f"{f('faithfulness_mean_kl')} | {f('perplexity', '{:.0f}')} | {f('word_validity', '{:.2f}')} | "
              f"{', '.join(r.get('degenerate') or []) or ''} | `{text}` |")


if __name__ == "__main__":
    main()
