"""Benchmark: InSPEcT per pair, three ways, on the same work; then the full default grid's wall time.

On one soft prompt and the same seeded sample of layer pairs (default 48):
- the reference loop (tests/inspect_reference.py): per pair a source pass, then greedy decoding without a KV
  cache, re-patching block t at every step;
- the KV-cached baseline a user would write: per pair a source pass, then transformers' own ``generate``
  (cached greedy) with a hook on block t that patches the placeholders in the prefill;
- soft2hard's batched grid (``inspect_grid``): all the sampled pairs in one call.
All three are warmed up, then timed in interleaved rounds (each round: the reference and the baseline on
every k-th pair, the batched grid on all of them), so that load changes on the machine hit all three.
The texts must be identical; the ratios are per pair on these same pairs. The full grid (all pairs of blocks
1..L-1) is timed once, as an absolute wall time: nothing else is timed on it.

Usage: python bench/inspect.py [--prompt RUN_DIR] [--pairs 48] [--rounds 4] [--amp none|bfloat16]
                               [--skip-full-grid]
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
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests/inspect_reference.py

import torch  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from soft2hard.interpret.inspection import InspectConfig, inspect_grid  # noqa: E402
from soft2hard.models import load_model  # noqa: E402
from soft2hard.prompts import SoftPrompt  # noqa: E402
from tests.inspect_reference import generate_inspect, reference_inspect  # noqa: E402

hf_logging.set_verbosity_error()
hf_logging.disable_progress_bar()


def per_pair(lm, prompt, cfg, pairs, method) -> tuple[list[str], float]:
    """Texts of ``method`` run pair by pair, and the seconds it took."""
    t = time.perf_counter()
    texts = [method(lm, prompt, cfg, p) for p in pairs]
    return texts, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--prompt", type=Path, default=None, help="a tuned prompt; default: 20 vocabulary rows")
    ap.add_argument("--pairs", type=int, default=48, help="layer pairs sampled from the grid and run all three ways")
    ap.add_argument("--rounds", type=int, default=4, help="interleaved timing rounds")
    ap.add_argument("--seed", type=int, default=0, help="which pairs are sampled")
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
    pairs = random.Random(args.seed).sample(grid, min(args.pairs, len(grid)))
    print(f"model {args.model}, prompt {args.prompt or '20 vocabulary rows'} ({prompt.shape[0]} tokens), "
          f"max_new_tokens {cfg.max_new_tokens}, {cfg.n_demos} demos, torch threads {torch.get_num_threads()}, "
          f"amp none")
    print(f"{len(pairs)} of the {len(grid)} grid pairs (seed {args.seed}), {args.rounds} interleaved rounds")

    # warm-up (untimed): one pair each per pair, the whole sample batched
    reference_inspect(lm, prompt, cfg, pairs[0])
    generate_inspect(lm, prompt, cfg, pairs[0])
    inspect_grid(lm, prompt, cfg, pairs=pairs)

    ref: dict[tuple[int, int], str] = {}
    gen: dict[tuple[int, int], str] = {}
    ref_s = gen_s = 0.0
    batched_s: list[float] = []
    batched_texts: list[list[str]] = []
    for r in range(args.rounds):
        part = pairs[r::args.rounds]
        texts, secs = per_pair(lm, prompt, cfg, part, reference_inspect)
        ref.update(zip(part, texts))
        ref_s += secs
        texts, secs = per_pair(lm, prompt, cfg, part, generate_inspect)
        gen.update(zip(part, texts))
        gen_s += secs
        t = time.perf_counter()
        batched_texts.append([d.text for d in inspect_grid(lm, prompt, cfg, pairs=pairs)])
        batched_s.append(time.perf_counter() - t)
        print(f"  round {r + 1}/{args.rounds}: reference {len(part)} pairs, generate {len(part)} pairs, "
              f"batched {len(pairs)} pairs in {batched_s[-1]:.1f} s", flush=True)

    fast = batched_texts[0]
    if any(texts != fast for texts in batched_texts):
        print("warning: the batched grid's texts differ between rounds (compared: round 1)")
    all_same = sum(ref[p] == gen[p] == f for p, f in zip(pairs, fast))
    print(f"identical texts (reference == generate == batched): {all_same}/{len(pairs)} "
          f"(reference == batched {sum(ref[p] == f for p, f in zip(pairs, fast))}, "
          f"generate == batched {sum(gen[p] == f for p, f in zip(pairs, fast))})")
    for p, f in zip(pairs, fast):
        if not ref[p] == gen[p] == f:
            print(f"  differ on {p}: reference {ref[p]!r}, generate {gen[p]!r}, batched {f!r}")
    ref_pp, gen_pp = ref_s / len(pairs), gen_s / len(pairs)
    batched_pp = statistics.median(batched_s) / len(pairs)
    print(f"reference loop (per pair: source pass, no KV cache, re-patch every step): {ref_pp:.3f} s/pair")
    print(f"KV-cached generate (per pair: source pass, model.generate + prefill patch hook): {gen_pp:.3f} s/pair")
    print(f"batched grid, {len(pairs)} pairs per call (median of {len(batched_s)} calls, "
          f"{min(batched_s) / len(pairs):.3f}..{max(batched_s) / len(pairs):.3f}): {batched_pp:.3f} s/pair")
    print(f"batched vs reference loop: {ref_pp / batched_pp:.1f}x; "
          f"batched vs KV-cached generate: {gen_pp / batched_pp:.1f}x (same {len(pairs)} pairs)")
    if args.skip_full_grid:
        return
    if args.amp != "none":
        lm.amp_dtype = torch.bfloat16
    t = time.perf_counter()
    full = inspect_grid(lm, prompt, cfg, progress=True)
    wall = time.perf_counter() - t
    print(f"full default grid: {len(full)} pairs (sources and targets = blocks 1..{lm.config.num_hidden_layers - 1}),"
          f" amp {args.amp}: {wall:.1f} s wall ({wall / len(full):.3f} s/pair)")


if __name__ == "__main__":
    main()
