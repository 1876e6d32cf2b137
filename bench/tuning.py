"""Benchmark: soft2hard's prompt-tuning step vs a plain PEFT + transformers loop, side by side in one run.

Both loops train a 20-token prompt on SmolLM2-135M from the same initial prompt, on the same batches, with
AdamW at the same lr, so their losses must match; we report real (non-padding) tokens per second, the ratio,
and the fraction of this machine's fp32 matmul peak, measured in the same run, that each reaches.

"% fp32 peak" counts the matmul FLOPs each loop actually executes (attention scores are ignored: sequences
are short), so it measures how well the hardware is used, while tokens/s measures the end-to-end gain:
    4 * (non-embedding params) * positions run through the blocks   forward + backward wrt activations only
  + 4 * vocab * d_model * positions where the LM head runs           forward + backward
The PEFT loop runs every row's prompt through the blocks and the head at every position; soft2hard runs the
prompt once per batch (shared KV prefix) and the head only at target positions.

Usage:  python bench/tuning.py [--steps 12] [--rounds 3] [--task gen/plural] [--batch-size 16]
"""

from __future__ import annotations

import os
import sys

# bench/inspect.py shares its name with the standard library's `inspect`: drop this folder from the import path
# so that `python bench/<script>.py` imports the real one.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]
import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from soft2hard.models import load_model, model_path  # noqa: E402
from soft2hard.tasks import get_task  # noqa: E402
from soft2hard.tuning import TuningConfig, batch_for_step, batch_loss, initial_prompt, training_target  # noqa: E402

hf_logging.set_verbosity_error()
hf_logging.disable_progress_bar()


def matmul_peak_gflops(dtype: torch.dtype, n: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(2):
        a @ b
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * n**3 / min(times) / 1e9


def peft_baseline_step_fn(name: str, init: torch.Tensor, lr: float):
    """A plain loop as the PEFT docs write it: full logits at every position, labels -100 on the context."""
    from peft import PromptTuningConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = model_path(name)
    tok = AutoTokenizer.from_pretrained(path)
    base = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    model = get_peft_model(base, PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=init.shape[0]))
    with torch.no_grad():
        model.prompt_encoder["default"].embedding.weight.copy_(init)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    def step(task, batch):
        rows = []
        for ex in batch:
            ctx = tok(task.format_input(ex.input))["input_ids"]
            tgt = tok(training_target(task, ex.target), add_special_tokens=False)["input_ids"]
            rows.append((ctx, tgt))
        T = max(len(c) + len(t) for c, t in rows)
        ids = torch.full((len(rows), T), pad)
        labels = torch.full((len(rows), T), -100)
        mask = torch.zeros(len(rows), T, dtype=torch.long)
        for i, (c, t) in enumerate(rows):
            ids[i, : len(c) + len(t)] = torch.tensor(c + t)
            labels[i, len(c): len(c) + len(t)] = torch.tensor(t)
            mask[i, : len(c) + len(t)] = 1
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    return step


def soft2hard_step_fn(name: str, init: torch.Tensor, lr: float, amp: str):
    lm = load_model(name, device="cpu", amp=amp)
    prompt = torch.nn.Parameter(init.clone())
    opt = torch.optim.AdamW([prompt], lr=lr)

    def step(task, batch):
        loss = batch_loss(lm, prompt, task, batch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--task", default="gen/plural")
    ap.add_argument("--steps", type=int, default=12, help="timed steps per loop per round")
    ap.add_argument("--rounds", type=int, default=3, help="loops run interleaved this many times")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-2)
    args = ap.parse_args()

    task = get_task(args.task)
    cfg = TuningConfig(batch_size=args.batch_size, seed=0)
    train = task.splits(seed=0).train
    batches = [batch_for_step(train, s, cfg) for s in range(args.steps + 1)]

    lm = load_model(args.model, device="cpu")
    init = initial_prompt(lm, cfg)
    n_virtual = init.shape[0]
    tokens, flops_peft, flops_s2h = [], 0, 0
    blocks = sum(p.numel() for n, p in lm.model.named_parameters() if "embed" not in n and "lm_head" not in n)
    V, D = lm.vocab_embeddings().shape
    for batch in batches[1:]:
        lengths = [len(lm.encode(task.format_input(ex.input)))
                   + len(lm.encode(training_target(task, ex.target), special=False)) for ex in batch]
        tgt = sum(len(lm.encode(training_target(task, ex.target), special=False)) for ex in batch)
        tokens.append(sum(lengths) + n_virtual * len(batch))  # real tokens, the same for every loop
        padded = len(batch) * (max(lengths) + n_virtual)  # both loops pad rows to the longest
        flops_peft += 4 * blocks * padded + 4 * V * D * padded
        flops_s2h += 4 * blocks * (n_virtual + len(batch) * max(lengths)) + 4 * V * D * tgt
    executed = {"peft+transformers (fp32)": flops_peft}
    del lm

    loops = {
        "peft+transformers (fp32)": peft_baseline_step_fn(args.model, init, args.lr),
        "soft2hard (fp32)": soft2hard_step_fn(args.model, init, args.lr, "none"),
        "soft2hard (bf16 autocast)": soft2hard_step_fn(args.model, init, args.lr, "bfloat16"),
    }
    times = {k: [] for k in loops}
    losses = {k: [] for k in loops}
    for r in range(args.rounds):
        for name, step in loops.items():
            if r == 0:
                step(task, batches[0])  # warm-up step, untimed (it also moves the prompt: same for all loops)
            t = time.perf_counter()
            run_losses = [step(task, b) for b in batches[1:]]
            times[name].append(time.perf_counter() - t)
            losses[name].append(run_losses)
        print(f"round {r + 1}/{args.rounds} done", flush=True)

    peak32 = matmul_peak_gflops(torch.float32)
    peak16 = matmul_peak_gflops(torch.bfloat16)
    total_tokens = sum(tokens)
    base_name = "peft+transformers (fp32)"
    base_tps = total_tokens / statistics.median(times[base_name])
    print(f"\nmodel {args.model}, task {args.task}, batch {args.batch_size}, {n_virtual} virtual tokens, "
          f"{args.steps} steps x {args.rounds} rounds, torch threads {torch.get_num_threads()}")
    print(f"matmul peak (2048^2, same run): fp32 {peak32:.0f} GFLOP/s, bf16 {peak16:.0f} GFLOP/s")
    print(f"{'loop':<28} {'tokens/s':>9} {'vs baseline':>11} {'% fp32 peak':>11} {'mean loss':>10} "
          f"{'max |Δloss|':>12}   (losses: first round, same batches)")
    base_losses = losses[base_name][0]
    for name in loops:
        med = statistics.median(times[name])
        tps = total_tokens / med
        frac = executed.get(name, flops_s2h) / med / 1e9 / peak32
        mean_loss = statistics.mean(losses[name][0])
        gap = max(abs(a - b) for a, b in zip(losses[name][0], base_losses))
        print(f"{name:<28} {tps:>9.0f} {tps / base_tps:>10.2f}x {100 * frac:>10.1f}% "
              f"{mean_loss:>10.4f} {gap:>12.4f}")


if __name__ == "__main__":
    main()
