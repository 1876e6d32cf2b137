"""Benchmark: DoD build throughput (soft prompts per hour), one run per (task, seed) vs packs.

The same 32-prompt DoD (16 tasks x 2 seeds: 8 generation, 8 classification; 40 steps; bf16 autocast as
`dod build` uses; the build's settings otherwise) is built from scratch three ways, in rounds, interleaved:
  per-run, 2 Ray workers   the build before packs (--pack 1 --workers 2): the baseline
  packs, one process       --pack K --workers 0 (torch on both cores)
  packs, 2 Ray workers     --pack K --workers 2
Wall time includes Ray start-up and each worker's model load, as a user sees them. Printed: prompts/hour, the
ratio to the baseline of the same round, peak RSS (the build's whole process tree, Ray workers included) and the
mean |validation score difference| against the per-run build over the same (task, seed, step) prompts.

Usage:  python bench/dod.py [--pack 8[,16]] [--steps 40] [--rounds 1] [--ways per-run,pack-0,pack-2]
(several pack sizes: each pack way runs once per size, all in the same rounds)
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
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import psutil  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from soft2hard.dod.build import build  # noqa: E402
from soft2hard.dod.config import BuildConfig  # noqa: E402
from soft2hard.models import default_cache_dir  # noqa: E402

hf_logging.set_verbosity_error()
TASKS = ["gen/first_letter", "cat/fruit-animal", "gen/last_letter", "cat/tool-vehicle-color", "gen/uppercase",
         "cat/sport-country", "gen/word_length", "cat/metal-flower-bird", "gen/reverse_word", "cat/city-spice",
         "gen/plural", "cat/insect-fish-tree", "gen/antonym", "gen/number_parity", "gen/next_number",
         "gen/starts_with_vowel"]
WAYS = {"per-run": (1, 2), "pack-0": (None, 0), "pack-2": (None, 2)}  # (pack, workers); None: --pack


class PeakRSS:
    """Samples the resident memory of this process and all its children (Ray's workers) every 0.2 s."""

    def __init__(self) -> None:
        self.peak, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for proc in [me, *me.children(recursive=True)]:
                try:
                    total += proc.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            self._stop.wait(0.2)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def run(way: str, pack: int, steps: int, cache: Path) -> dict:
    size, workers = WAYS[way]
    size = size or pack
    cfg = BuildConfig(tasks=tuple(TASKS), general_heldout=0, seeds=(0, 1), amp="bfloat16", tuning={
        "n_tokens": 20, "steps": steps, "eval_every": steps // 2, "lr": 3e-2, "batch_size": 8,
        "max_eval_examples": 16, "max_test_examples": 40, "init": "vocab"})
    with tempfile.TemporaryDirectory() as tmp, PeakRSS() as rss:
        t0 = time.perf_counter()
        manifest = build(Path(tmp), cfg, cache, workers=workers, progress=False, pack=size)
        seconds = time.perf_counter() - t0
    scores = {p.id: p.validation_score for t in manifest.tasks for p in t.prompts}
    runs = sum(len({p.seed for p in t.prompts}) for t in manifest.tasks)
    return {"seconds": seconds, "runs": runs, "rate": runs * 3600 / seconds, "rss": rss.peak, "scores": scores}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pack", default="8", help="prompts per model pass for the pack ways; a comma-separated list "
                   "times each size (default 8)")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--rounds", type=int, default=1, help="rounds of all ways, interleaved (default 1)")
    p.add_argument("--ways", default=",".join(WAYS), help=f"comma-separated, from {', '.join(WAYS)}")
    args = p.parse_args()
    ways = [w.strip() for w in args.ways.split(",")]
    if "per-run" not in ways or set(ways) - set(WAYS):
        p.error(f"--ways must include per-run (the baseline) and name only {', '.join(WAYS)}")
    logging.basicConfig(level=logging.WARNING)
    cache = Path(os.environ.get("SOFT2HARD_CACHE", default_cache_dir()))
    sizes = [int(x) for x in args.pack.split(",")]
    runs = [(w, k) for w in ways for k in (sizes if WAYS[w][0] is None else [WAYS[w][0]])]
    print(f"cpu cores: {os.cpu_count()}  prompts: {len(TASKS)} tasks x 2 seeds  steps: {args.steps}  "
          f"pack sizes: {sizes}  rounds: {args.rounds}")
    print(f"{'round':<6}{'way':<14}{'prompts':>8}{'seconds':>9}{'prompts/h':>11}{'vs per-run':>11}"
          f"{'peak RSS':>10}{'|Δ val|':>9}")
    for r in range(args.rounds):
        results = {f"{w}" if WAYS[w][0] else f"{w} K={k}": run(w, k, args.steps, cache) for w, k in runs}
        base = results["per-run"]
        for w, res in results.items():
            shared = sorted(set(res["scores"]) & set(base["scores"]))
            diff = sum(abs(res["scores"][k] - base["scores"][k]) for k in shared) / max(1, len(shared))
            print(f"{r:<6}{w:<14}{res['runs']:>8}{res['seconds']:>9.1f}{res['rate']:>11.1f}"
                  f"{res['rate'] / base['rate']:>10.2f}x{res['rss'] / 2**30:>8.2f}GB{diff:>9.4f}", flush=True)


if __name__ == "__main__":
    main()
