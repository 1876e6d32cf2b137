"""How RLPrompt's sampled prompts change during training (docs/OPTIMIZE.md): per block of steps, the mean task
reward (before the perplexity penalty) and the mean log-perplexity of the prompts sampled in those steps.

Usage:  python scripts/rlprompt_dynamics.py runs/rl_sweep/gen_word_sentiment runs/rl_sweep/gen_number_parity
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def blocks(history: list[dict], size: int) -> list[tuple[int, float, float]]:
    """(last step, mean task reward, mean log-perplexity) per ``size`` steps; task reward = reward + lambda*log-ppl."""
    rows = []
    for start in range(0, len(history), size):
        chunk = history[start:start + size]
        rows.append((chunk[-1]["step"], sum(h["task_reward_mean"] for h in chunk) / len(chunk),
                     sum(h["log_perplexity_mean"] for h in chunk) / len(chunk)))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sweeps", type=Path, nargs="+", help="folders of `soft2hard optimize --method rlprompt --sweep`")
    p.add_argument("--block", type=int, default=50, help="steps per row")
    args = p.parse_args()
    print("| task | lambda | steps | task reward (mean) | log-perplexity of samples (mean) |")
    print("|---|---|---|---|---|")
    for sweep in args.sweeps:
        for run in sorted(sweep.glob("w_*/result.json"), key=lambda f: float(f.parent.name[2:])):
            result = json.loads(run.read_text())
            lam = result["weight"]
            history = [h | {"task_reward_mean": h["reward_mean"] + lam * h["log_perplexity_mean"]}
                       for h in result["training"]]
            for step, reward, log_ppl in blocks(history, args.block):
                print(f"| {result['task']} | {lam:g} | {step - args.block + 1}-{step} | {reward:.3f} | {log_ppl:.2f} |")


if __name__ == "__main__":
    main()
