"""Benchmark: translation latency per soft prompt with the shipped SmolLM2 translator.

Times ``Translator.translate`` on real prompts (the packed DoD bank when present, else random prompts at the
vocabulary's scale) one at a time and in batches of 8, after one warm-up call; model loading is reported
separately. The baseline is label-free InSPEcT (one layer pair) on the same prompts in the same run.

Usage:  python bench/translate.py [--prompts 16] [--amp none|bfloat16]
"""

from __future__ import annotations

import os
import sys

# bench/inspect.py shadows the standard library's `inspect`: drop this folder from the import path.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]
import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from soft2hard.interpret.selection import Profile, describe_label_free, find_profile  # noqa: E402
from soft2hard.interpret.translator import load_translator, shipped_translator  # noqa: E402
from soft2hard.models import default_cache_dir, load_model  # noqa: E402

hf_logging.set_verbosity_error()
BANK = Path(__file__).resolve().parents[1] / "dod" / "smollm2-135m"


def prompts_for(lm, n: int) -> list[torch.Tensor]:
    if (BANK / "manifest.json").exists():
        from soft2hard.dod.manifest import Manifest

        m = Manifest.load(BANK)
        return [x for _, e, x in m.iter_prompts(m.split("heldout")) if e.best][:n]
    gen = torch.Generator().manual_seed(0)
    scale = float(lm.vocab_embeddings().float().std())
    return [torch.randn(20, lm.d_model, generator=gen) * scale for _ in range(n)]


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prompts", type=int, default=16)
    p.add_argument("--amp", default="none", choices=["none", "bfloat16"])
    args = p.parse_args()
    cache = Path(os.environ.get("SOFT2HARD_CACHE", default_cache_dir()))
    t0 = time.perf_counter()
    lm = load_model("smollm2-135m", device="cpu", cache_dir=cache, amp=args.amp)
    translator = load_translator(lm, shipped_translator("smollm2-135m"))
    print(f"load model + translator: {time.perf_counter() - t0:.1f} s")
    plain = load_model("smollm2-135m", device="cpu", cache_dir=cache, amp=args.amp)
    profile = Profile.load(find_profile(cache, plain.name))
    prompts = prompts_for(lm, args.prompts)
    translator.translate(prompts[:1])  # warm-up
    single = [timed(lambda x=x: translator.translate([x])) for x in prompts]
    batched = timed(lambda: [translator.translate(prompts[i:i + 8]) for i in range(0, len(prompts), 8)])
    inspect = [timed(lambda x=x: describe_label_free(plain, x, profile, k=1)) for x in prompts]
    ms = statistics.median(single) * 1000
    print(f"prompts: {len(prompts)} (n_tokens {prompts[0].shape[0]}), amp {args.amp}, {torch.get_num_threads()} threads")
    print(f"translator, one prompt at a time: median {ms:.0f} ms/prompt (min {min(single) * 1000:.0f}, "
          f"max {max(single) * 1000:.0f})")
    print(f"translator, batches of 8:          {batched / len(prompts) * 1000:.0f} ms/prompt")
    print(f"label-free InSPEcT (baseline):     median {statistics.median(inspect) * 1000:.0f} ms/prompt")
    print(f"translator / InSPEcT latency ratio: {statistics.median(single) / statistics.median(inspect):.2f}x")


if __name__ == "__main__":
    main()
