"""Benchmark: translation latency per soft prompt with the shipped SmolLM2 translator.

Times ``Translator.translate`` on real prompts (the packed DoD bank when present, else random prompts at the
vocabulary's scale) one at a time and in batches of 8, after one warm-up call; model loading is reported
separately. The baseline is label-free InSPEcT (one layer pair) on the same prompts in the same run.

With ``--candidates N`` it times verified translation instead (``soft2hard translate --candidates N``: N
translator candidates and the label-free InSPEcT text scored by faithfulness on 16 unlabelled validation inputs)
on the first held-out task of each task family of the bank (so long-input families count as much as
short-input ones), interleaved prompt by prompt with the greedy translation of the same prompt as the baseline.
``--dod`` picks the bank whose held-out tasks are used (default: the compositional bank, whose tasks are
generated; the BIG-bench tasks of ``dod/smollm2-135m`` need the BIG-bench sdist, which PyPI no longer serves).

Usage:  python bench/translate.py [--prompts 16] [--amp none|bfloat16] [--candidates 8] [--dod DIR]
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


def verified(cache: Path, n_prompts: int, n: int, amp: str, bank: Path) -> None:
    """Seconds per prompt of verified translation against greedy translation, by answer type."""
    from soft2hard.evaluation.items import from_dod
    from soft2hard.interpret.translator_training import task_family
    from soft2hard.interpret.verify import select_translation, selection_inputs

    lm = load_model("smollm2-135m", device="cpu", cache_dir=cache, amp=amp)
    translator = load_translator(load_model("smollm2-135m", device="cpu", cache_dir=cache, amp=amp),
                                 shipped_translator("smollm2-135m"))
    profile = Profile.load(find_profile(cache, lm.name))
    _, items = from_dod(bank, ["heldout"], cache)
    firsts: dict[str, object] = {}  # one task per family: short- and long-input families alike
    for item in items:
        firsts.setdefault(task_family(item.name), item)
    chosen = list(firsts.values())[:n_prompts]
    translator.translate([chosen[0].prompt])  # warm-up
    rows = []
    for item in chosen:
        greedy = timed(lambda x=item.prompt: translator.translate([x]))
        inputs = selection_inputs(item.task, item.split_seed, 16)
        t0 = time.perf_counter()
        extra = [(describe_label_free(lm, item.prompt, profile, k=1)[0].text, "inspect")]
        verdict = select_translation(lm, translator, item.prompt, item.task, inputs, n=n, seed=0, extra=extra)
        rows.append((item, greedy, time.perf_counter() - t0, verdict))
        print(f"  {item.name} ({item.answer_type}): greedy {greedy:.1f} s, verified {rows[-1][2]:.1f} s, "
              f"{len(verdict.ranked)} texts, verified={verdict.verified}, best {verdict.best.origin}", flush=True)
    print(f"verified translation, N={n} candidates + InSPEcT, 16 inputs, amp {amp}, {torch.get_num_threads()} threads")
    for t in ("classification", "generation"):
        mine = [r for r in rows if r[0].answer_type == t]
        if mine:
            g, v = statistics.median(r[1] for r in mine), statistics.median(r[2] for r in mine)
            print(f"{t:>14}: median {v:.1f} s/prompt verified (max {max(r[2] for r in mine):.1f} s) vs {g:.1f} s "
                  f"greedy ({v / g:.1f}x), {len(mine)} prompts")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prompts", type=int, default=16)
    p.add_argument("--amp", default="none", choices=["none", "bfloat16"])
    p.add_argument("--candidates", type=int, default=0, help="time verified translation with N candidates")
    p.add_argument("--dod", type=Path, default=BANK.parent / "smollm2-135m-comp",
                   help="with --candidates: the bank whose held-out tasks are timed")
    args = p.parse_args()
    cache = Path(os.environ.get("SOFT2HARD_CACHE", default_cache_dir()))
    if args.candidates:
        verified(cache, args.prompts, args.candidates, args.amp, args.dod)
        return
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
