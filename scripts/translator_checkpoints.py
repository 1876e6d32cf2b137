"""Score every checkpoint of a finished translator run on its own validation tasks, and optionally publish one.

    python scripts/translator_checkpoints.py runs/tr-all --dod dod/smollm2-135m dod/smollm2-135m-comp \
        [--publish-best runs/tr-all-quality]

The run's validation tasks are rebuilt from its translator.json (same banks, config and seed), so nothing
held out is looked at. For each checkpoint it prints the validation loss and the validation quality
(`translator_training.validation_quality`: ROUGE-L of greedy instructions, class rate of label lists); only the
checkpoints of the run's validation passes, when it had some.
`--publish-best DIR` writes a translator folder with the checkpoint of highest quality (its translator.json says
which step and why), which `translate --translator DIR` and `translator eval --translator DIR` read.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from soft2hard.dod.manifest import Manifest, without_leaking_training  # noqa: E402
from soft2hard.interpret.translator import TranslatorConfig, _load_adapter_weights, apply_lora  # noqa: E402
from soft2hard.interpret.translator_training import (  # noqa: E402
    prepare_examples,
    validation_loss,
    validation_quality,
)
from soft2hard.models import load_model  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--dod", nargs="+", required=True, help="the banks the run was trained on")
    ap.add_argument("--publish-best", type=Path, default=None)
    args = ap.parse_args()
    meta = json.loads((args.run / "translator.json").read_text())
    cfg = TranslatorConfig(**meta["config"])
    manifest, _ = without_leaking_training(Manifest.load_many(args.dod))
    train, validation = prepare_examples(manifest, cfg)
    if sorted({ex.task for ex in validation}) != meta["validation_tasks"]:
        sys.exit("the rebuilt validation tasks differ from the run's: give the banks it was trained on")
    lm = load_model(meta["model"], amp="bfloat16")
    peft_model = apply_lora(lm, cfg)
    peft_model.eval()
    rows = []
    passes = {v["step"] for v in meta.get("validation", [])}  # the checkpoints of the validation passes
    for ckpt in sorted((args.run / "checkpoints").glob("step_*")):
        if passes and int(ckpt.name.split("_")[1]) not in passes:
            continue
        _load_adapter_weights(peft_model, ckpt / "adapter")
        rows.append({"step": int(ckpt.name.split("_")[1]), "loss": validation_loss(lm, validation, cfg),
                     "quality": validation_quality(lm, validation)})
        print(f"step {rows[-1]['step']}: validation loss {rows[-1]['loss']:.4f}, quality {rows[-1]['quality']:.4f}",
              flush=True)
    best = max(rows, key=lambda r: (r["quality"], -r["step"]))
    print(f"best by validation quality: step {best['step']}")
    if args.publish_best:
        out = args.publish_best
        out.mkdir(parents=True, exist_ok=True)
        for f in (args.run / "checkpoints" / f"step_{best['step']:06d}" / "adapter").iterdir():
            shutil.copy(f, out / f.name)
        meta = {**meta, "best_step": best["step"], "checkpoint_scores": rows,
                "selected_by": "validation quality over the run's checkpoints (scripts/translator_checkpoints.py)"}
        (out / "translator.json").write_text(json.dumps(meta, indent=2))
        print(f"{out}: translator of step {best['step']}")


if __name__ == "__main__":
    main()
