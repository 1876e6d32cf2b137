"""``soft2hard demo``: the pipeline on the built-in offline model and a built-in task.

For now: tune a soft prompt on SmolLM2 and compare it with the model given no prompt. Later stages (describe,
translate, deploy, report) join this as they land.
"""

from __future__ import annotations

import time
from pathlib import Path

from soft2hard.models import load_model
from soft2hard.tasks import get_task
from soft2hard.tuning import TuningConfig, tune


def run_demo(model: str = "smollm2-135m", task: str = "gen/plural", out: Path = Path("runs/demo"),
             steps: int = 100, seed: int = 0, device: str = "auto", dtype: str = "float32", amp: str = "none",
             cache_dir: Path | None = None) -> dict:
    start = time.time()
    the_task = get_task(task, cache_dir=cache_dir)
    print(f"[1/2] loading {model} (the first run dequantises the GGUF and caches it)")
    lm = load_model(model, device=device, dtype=dtype, cache_dir=cache_dir, amp=amp)
    print(f"[2/2] tuning a 20-token soft prompt on {the_task.name}: {the_task.description}")
    cfg = TuningConfig(n_tokens=20, steps=steps, seed=seed, eval_every=max(1, steps // 4))
    result = tune(lm, the_task, cfg, Path(out) / "prompt", overwrite=True)
    m = result.metrics
    rows = [("no prompt (zero-shot)", m["baseline_score"]), ("soft prompt (20 tokens)", m["test_score"])]
    print()
    print(f"{'condition':<28} {m['metric']:>12}   task {the_task.name}, model {model}, test n={m['n_test']}")
    for name, value in rows:
        print(f"{name:<28} {value:>12.3f}")
    print(f"\nsoft prompt saved as a PEFT adapter in {Path(out) / 'prompt'}  ({time.time() - start:.0f} s in all)")
    return m
