"""Benchmark: InSPEcT reference loop vs soft2hard's batched, KV-cached grid, in one process.

Both run on the same soft prompt and the same layer pairs; we check that they produce the same texts, print
seconds per pair for each and the ratio, then time the full default grid (all pairs of blocks 1..L-1).

Usage: python bench/inspect.py [--prompt RUN_DIR] [--ref-pairs 6] [--amp none|bfloat16] [--skip-full-grid]
"""

from __future__ import annotations

import os
import sys

# bench/inspect.py shares its name with the standard library's `inspect`: drop this folder from the import path
# so that `python bench/<script>.py` imports the real one.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]
import argparse  # noqa: E402
import random  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests/inspect_reference.py

import torch  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from soft2hard.interpret.inspection import InspectConfig, inspect_grid  # noqa: E402
from soft2hard.models import load_model  # noqa: E402
from soft2hard.prompts import SoftPrompt  # noqa: E402
from tests.inspect_reference import reference_inspect  # noqa: E402

hf_logging.set_verbosity_error()
hf_logging.disable_progress_bar()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--prompt", type=Path, default=None, help="a tuned prompt; default: 20 vocabulary rows")
    ap.add_argument("--ref-pairs", type=int, default=6, help="pairs timed with the slow reference loop")
    ap.add_argument("--amp", default="none", choices=["none", "bfloat16"], help="for the full grid only")
    ap.add_argument("--skip-full-grid", action="store_true")
    args = ap.parse_args()

    lm = load_model(args.model, device="cpu")
    if args.prompt:
        prompt = SoftPrompt.load(args.prompt).tensor
    else:
        prompt = lm.vocab_embeddings()[torch.randint(0, 5000, (20,), generator=torch.Generator().manual_seed(0))]
    cfg = InspectConfig()
    grid = cfg.grid(lm.config.num_hidden_layers)
    pairs = random.Random(0).sample(grid, args.ref_pairs)

    t = time.perf_counter()
    ref = [reference_inspect(lm, prompt, cfg, p) for p in pairs]
    ref_per_pair = (time.perf_counter() - t) / len(pairs)
    t = time.perf_counter()
    fast = inspect_grid(lm, prompt, cfg, pairs=pairs)
    fast_small = (time.perf_counter() - t) / len(pairs)
    same = sum(r == d.text for r, d in zip(ref, fast))

    print(f"model {args.model}, prompt {args.prompt or '20 vocabulary rows'} ({prompt.shape[0]} tokens), "
          f"max_new_tokens {cfg.max_new_tokens}, {cfg.n_demos} demos, torch threads {torch.get_num_threads()}")
    print(f"identical texts: {same}/{len(pairs)} on pairs {pairs}")
    print(f"reference loop (per-pair source pass, no cache, re-patch each step): {ref_per_pair:.2f} s/pair")
    print(f"batched on the same {len(pairs)} pairs: {fast_small:.3f} s/pair  -> {ref_per_pair / fast_small:.1f}x")
    if args.skip_full_grid:
        return
    if args.amp != "none":
        lm.amp_dtype = torch.bfloat16
    t = time.perf_counter()
    full = inspect_grid(lm, prompt, cfg, progress=True)
    wall = time.perf_counter() - t
    per_pair = wall / len(full)
    print(f"full default grid: {len(full)} pairs (sources and targets = blocks 1..{lm.config.num_hidden_layers - 1}),"
          f" amp {args.amp}: {wall:.1f} s wall, {per_pair:.3f} s/pair -> {ref_per_pair / per_pair:.1f}x the reference")


if __name__ == "__main__":
    main()
