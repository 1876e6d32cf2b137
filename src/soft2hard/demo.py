"""``soft2hard demo``: the whole pipeline on the built-in offline models and a built-in task.

1. tune a soft prompt on the source model (SmolLM2-135M);
2. describe it: vocabulary projection, InSPEcT (label-free, with an InSPEcT layer grid for the report) and the
   shipped translator;
3. deploy the texts on the target model (Gemma3-270M) next to zero-shot, few-shot and the task's own
   description, and the soft prompt on its source model;
4. print the comparison table and write the HTML report.
About 3 minutes on a quiet 2-core CPU (README). Each run starts afresh in ``OUT`` (the prompt and the evaluation).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from soft2hard.evaluation import EvalConfig, EvalTask, SourceSide, TargetsConfig, evaluate, open_targets
from soft2hard.evaluation.run import markdown
from soft2hard.models import canonical_model_name, load_model
from soft2hard.report import write_report
from soft2hard.tasks import get_task
from soft2hard.tuning import TuningConfig, tune

DEMO_CONDITIONS = ("soft_prompt", "zero_shot", "few_shot", "reference", "projection", "inspect", "translator")


def run_demo(model: str = "smollm2-135m", task: str = "gen/plural", out: Path = Path("runs/demo"),
             steps: int = 100, seed: int = 0, device: str = "auto", dtype: str = "float32", amp: str = "none",
             cache_dir: Path | None = None, target: str = "gemma3-270m", max_examples: int = 30,
             inspect_grid: str | None = "1-29:7", progress: bool = True, translator: Path | None = None,
             profile: Path | None = None) -> list[dict]:
    """Run the demo into ``out``; returns the evaluation's rows.

    ``translator`` / ``profile``: a translator folder and an InSPEcT profile to use instead of the ones shipped
    for the built-in source model (they only fit SmolLM2's width; the tests run the demo on tiny models this
    way). ``inspect_grid``: the report's layer grid, None for none."""
    start = time.time()
    out = Path(out)
    model = canonical_model_name(model)
    the_task = get_task(task, cache_dir=cache_dir)
    print(f"[1/4] loading {model} (the first run dequantises the GGUF and caches it)", flush=True)
    lm = load_model(model, device=device, dtype=dtype, cache_dir=cache_dir, amp=amp)
    print(f"[2/4] tuning a 20-token soft prompt on {the_task.name}: {the_task.description}", flush=True)
    cfg = TuningConfig(n_tokens=20, steps=steps, seed=seed, eval_every=max(1, steps // 4))
    result = tune(lm, the_task, cfg, out / "prompt", overwrite=True, progress=progress)
    m = result.metrics
    print(f"      soft prompt: test {m['metric']} {m['test_score']:.3f} (no prompt: {m['baseline_score']:.3f})")

    print(f"[3/4] describing it (projection, InSPEcT, translator) and deploying the texts on {target}", flush=True)
    eval_dir = out / "eval"
    shutil.rmtree(eval_dir, ignore_errors=True)
    item = EvalTask(task=the_task, reference=the_task.description, prompt=result.prompt.tensor, split_seed=seed,
                    origin=str(out / "prompt"))
    if translator is not None or profile is not None:
        print(f"      interpreters not the shipped ones: translator {translator or 'shipped'}, "
              f"InSPEcT profile {profile or 'shipped'}", flush=True)
    source = SourceSide(model, cache_dir, device=device, dtype=dtype, amp=amp, progress=progress, lm=lm,
                        translator_dir=translator, profile=profile)
    eval_cfg = EvalConfig(conditions=DEMO_CONDITIONS, max_examples=max_examples, seed=seed,
                          inspect_grid=inspect_grid)
    with open_targets(TargetsConfig(target=target), eval_dir, cache_dir, load={"device": device}) as targets:
        rows = evaluate([item], source, model, targets, eval_cfg, eval_dir, progress=progress)

    print("[4/4] results\n")
    print(markdown(rows))
    texts = source_texts(eval_dir)
    for condition in ("reference", "projection", "inspect", "translator"):
        if condition in texts:
            print(f"  {condition:<11} {texts[condition]!r}")
    seen = seen_conditions(eval_dir)
    for condition in seen:
        print(f"  warning: the {condition} interpreter saw {the_task.name} in its calibration/training set "
              "(seen_in_training: true): its score here is not a held-out score")
    if "translator" in texts and "translator" not in seen:
        print(f"  {the_task.name} is not among the translator's training tasks: its text is a held-out translation")
    report = write_report(eval_dir)
    print(f"\nsoft prompt (PEFT adapter): {out / 'prompt'}\nresults: {eval_dir}/results.json"
          f"\nHTML report: {report}\n({time.time() - start:.0f} s in all)")
    return rows


def seen_conditions(eval_dir: Path) -> list[str]:
    """The text conditions whose interpreter (InSPEcT profile, translator) saw the demo's task."""
    from soft2hard import atomic

    entry = next(iter(atomic.read_json(eval_dir / "texts.json").values()))
    return [c for c, v in entry["texts"].items() if v.get("seen_in_training")]


def source_texts(eval_dir: Path) -> dict[str, str]:
    from soft2hard import atomic

    texts = atomic.read_json(eval_dir / "texts.json")
    entry = next(iter(texts.values()))
    return {c: v["text"] for c, v in entry["texts"].items()}
