"""CLI: ``optimize --method pez|rlprompt`` (one run, or ``--sweep`` over the interpretability weight)."""

from __future__ import annotations

import json
from pathlib import Path

from soft2hard.cli.common import add_model_args, cache_dir, load_model_from_args
from soft2hard.errors import Soft2HardError
from soft2hard.optimize import METHODS


def add_parsers(sub) -> None:
    o = sub.add_parser("optimize", help="optimize an interpretable hard prompt directly (PEZ or RLPrompt)")
    o.add_argument("--method", required=True, choices=list(METHODS))
    add_model_args(o)
    o.add_argument("--task", required=True, help="task name or JSONL/CSV file (RLPrompt: classification only)")
    o.add_argument("--out", type=Path, required=True)
    o.add_argument("--tokens", type=int, default=None, help="prompt length (default: PEZ 10, RLPrompt 5)")
    o.add_argument("--steps", type=int, default=None, help="optimizer steps (default: PEZ 200, RLPrompt 1000)")
    o.add_argument("--eval-every", type=int, default=None)
    o.add_argument("--batch-size", type=int, default=None,
                   help="task examples per step (default: PEZ 8, RLPrompt 16 per sampled prompt)")
    o.add_argument("--lr", type=float, default=None, help="learning rate (default: PEZ 0.3 Adafactor, RLPrompt 1e-4)")
    o.add_argument("--samples-per-step", type=int, default=None,
                   help="RLPrompt only: prompts sampled per step (default 8; the cost per step grows with it)")
    o.add_argument("--top-k", type=int, default=None,
                   help="RLPrompt only: sample among the LM's k most likely next tokens (official RLPrompt: 256)")
    o.add_argument("--sql-loss", choices=["single_step", "path"], default=None,
                   help="RLPrompt only: soft-Q loss form (default single_step; path = the official RLPrompt loss)")
    o.add_argument("--reward-scale", type=float, default=None,
                   help="RLPrompt only: multiplier of the z-scored reward (default 1; official RLPrompt: 5)")
    o.add_argument("--weight", type=float, default=0.0,
                   help="interpretability weight: " + "; ".join(f"{m.name}: {m.weight}" for m in METHODS.values()))
    o.add_argument("--sweep", default=None, help="comma-separated weights: one run each, then a table and a plot")
    o.add_argument("--soft-prompt", type=Path, default=None,
                   help="a soft prompt for the same task: the sweep reports faithfulness to it")
    o.add_argument("--seed", type=int, default=0)
    o.add_argument("--resume", action="store_true")
    o.add_argument("--overwrite", action="store_true")
    o.add_argument("--quiet", action="store_true")
    o.add_argument("--json", action="store_true")


def _config(args):
    method = METHODS[args.method]
    given = {"seed": args.seed, "weight": args.weight, "n_tokens": args.tokens}
    for name in ("steps", "eval_every", "batch_size", "lr"):
        given[name] = getattr(args, name)
    for other in METHODS.values():
        for name in other.only:
            if getattr(args, name) is not None and name not in method.only:
                raise Soft2HardError(f"--{name.replace('_', '-')} is an {other.label} setting; {method.label} has no "
                                     f"such setting")
            given[name] = getattr(args, name)
    return method.config(**{k: v for k, v in given.items() if v is not None})  # unset: the method's default


def _weights(spec: str) -> list[float]:
    try:
        weights = [float(x) for x in spec.split(",") if x.strip()]
    except ValueError:
        raise Soft2HardError(f"--sweep takes comma-separated numbers, got {spec!r}") from None
    if not weights:
        raise Soft2HardError("--sweep needs at least one weight")
    return weights


def cmd_optimize(args) -> None:
    from soft2hard.optimize import run_one
    from soft2hard.optimize.sweep import run_sweep
    from soft2hard.prompts import SoftPrompt
    from soft2hard.tasks import get_task

    cfg = _config(args)  # validates before any loading
    weights = _weights(args.sweep) if args.sweep else None
    if weights is not None:
        for w in weights:  # each weight must be valid for the method before the first run starts
            _config(type(args)(**{**vars(args), "weight": w}))
    task = get_task(args.task, cache_dir=cache_dir(args))
    soft = SoftPrompt.load(args.soft_prompt).tensor if args.soft_prompt else None
    lm = load_model_from_args(args)
    if soft is not None:
        lm.check_prompt(soft)
    if weights is not None:
        rows = run_sweep(lm, task, args.method, weights, cfg, args.out, soft_prompt=soft, progress=not args.quiet)
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            print((args.out / "sweep.md").read_text())
            print(f"wrote {args.out}/sweep.json, sweep.md and sweep.png")
        return
    result = run_one(lm, task, args.method, cfg, args.out, resume=args.resume, overwrite=args.overwrite,
                     progress=not args.quiet)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return
    flags = ", ".join(result.degenerate) or "none"
    print(f"{task.name}: {result.text!r}\n  {result.metric} {result.test_score:.3f} (test), perplexity "
          f"{result.perplexity:.1f}, word validity {result.word_validity:.2f}, degenerate: {flags}")


COMMANDS = {"optimize": cmd_optimize}
