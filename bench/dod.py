"""Benchmark: DoD build throughput (soft prompts trained per hour) with 1 and 2 Ray workers, side by side.

Each configuration builds the same small DoD from scratch in a temporary folder: word-category tasks (cheap,
short inputs) and a few generated tasks, with the build's default tuning settings scaled down (``--steps``).
Wall time includes Ray start-up and each worker's model load, as a user would see them. The in-process build
(``--workers 0``, no Ray, torch on all cores) is the baseline the ratios are taken against.

Usage:  python bench/dod.py [--tasks 8] [--steps 20] [--configs 0,1,2]
"""

from __future__ import annotations

import os
import sys

# bench/inspect.py shadows the standard library's `inspect`: drop this folder from the import path.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]
import argparse  # noqa: E402
import logging  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from transformers.utils import logging as hf_logging  # noqa: E402

from soft2hard.dod.build import BuildConfig, build  # noqa: E402
from soft2hard.models import default_cache_dir  # noqa: E402

hf_logging.set_verbosity_error()
TASKS = ["cat/fruit-animal", "cat/tool-vehicle-color", "cat/sport-country", "cat/metal-flower-bird",
         "gen/plural", "gen/first_letter", "gen/number_parity", "gen/antonym", "cat/city-spice",
         "cat/insect-fish-tree", "gen/uppercase", "gen/last_letter"]


def run(workers: int, tasks: list[str], steps: int, cache: Path) -> tuple[float, int]:
    cfg = BuildConfig(tasks=tuple(tasks), general_heldout=1, tuning={
        "n_tokens": 20, "steps": steps, "eval_every": steps, "lr": 3e-2, "batch_size": 8,
        "max_eval_examples": 16, "max_test_examples": 24, "init": "vocab"})
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        manifest = build(Path(tmp), cfg, cache, workers=workers, progress=False)
        seconds = time.perf_counter() - t0
    return seconds, len(manifest.tasks)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", type=int, default=8)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--configs", default="0,1,2", help="worker counts to time (0 = in-process, no Ray)")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    cache = Path(os.environ.get("SOFT2HARD_CACHE", default_cache_dir()))
    tasks = TASKS[: args.tasks]
    print(f"cpu cores: {os.cpu_count()}  tasks: {len(tasks)}  steps per prompt: {args.steps}")
    results = {}
    for workers in [int(x) for x in args.configs.split(",")]:
        seconds, n = run(workers, tasks, args.steps, cache)
        results[workers] = n * 3600 / seconds
        label = "in-process (no Ray)" if workers == 0 else f"Ray, {workers} worker(s)"
        print(f"{label:<22} {n} prompts in {seconds:6.1f} s  -> {results[workers]:6.1f} prompts/hour")
    base = results.get(0) or next(iter(results.values()))
    for workers, rate in results.items():
        print(f"speed-up of {workers} worker(s) vs baseline: {rate / base:.2f}x")
    if 1 in results and 2 in results:
        print(f"2 Ray workers vs 1 Ray worker: {results[2] / results[1]:.2f}x")


if __name__ == "__main__":
    main()
