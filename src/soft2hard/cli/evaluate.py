"""CLI: ``evaluate`` (tasks x conditions x targets -> results table)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from soft2hard.cli.common import ConfigOptions, add_model_args, cache_dir, model_kwargs
from soft2hard.errors import Soft2HardError


def eval_options() -> ConfigOptions:
    """``evaluate``'s :class:`~soft2hard.evaluation.EvalConfig` options: every field."""
    from soft2hard.evaluation import EvalConfig

    return ConfigOptions(EvalConfig, tuple(f.name for f in dataclasses.fields(EvalConfig)))


def targets_options() -> tuple[ConfigOptions, ConfigOptions]:
    """``evaluate``'s :class:`~soft2hard.targets.TargetsConfig` options: the local target (followed by its model
    options), then the rest."""
    from soft2hard.targets import MODES, TargetsConfig

    rest = tuple(f.name for f in dataclasses.fields(TargetsConfig) if f.name != "target")
    return (ConfigOptions(TargetsConfig, ("target",)),
            ConfigOptions(TargetsConfig, rest, choices={"target_mode": MODES, "api_mode": MODES}))


def add_parsers(sub) -> None:
    e = sub.add_parser("evaluate", help="soft prompt on its model vs text prompts (zero-shot, few-shot, reference, "
                       "projection, InSPEcT, translator, PEZ) on target models or APIs; resumable")
    e.add_argument("--tasks", required=True, help="comma-separated task names; with --dod also heldout, train or all")
    e.add_argument("--out", type=Path, required=True, help="evaluation folder (rerun the same command to resume)")
    e.add_argument("--dod", type=Path, default=None, help="take each task's best soft prompt from this DoD")
    e.add_argument("--prompt", action="append", default=[], metavar="TASK=PATH",
                   help="a soft prompt (PEFT adapter dir or .safetensors) for a task (repeatable)")
    e.add_argument("--max-tasks", type=int, default=None, help="evaluate only the first N tasks")
    src = e.add_argument_group("source model (where the soft prompts live)")
    add_model_args(src, default=None, model_help="default: the DoD's model, else smollm2-135m")
    tgt = e.add_argument_group("targets (where the text prompts are deployed)")
    local, api = targets_options()
    local.add_to(tgt)
    add_model_args(tgt, model=False, prefix="target-")
    api.add_to(tgt)
    ev = e.add_argument_group("conditions")
    eval_options().add_to(ev)
    ev.add_argument("--translator", type=Path, default=None, help="translator directory (default: the shipped one)")
    ev.add_argument("--profile", type=Path, default=None, help="InSPEcT profile (default: calibrated or shipped)")
    e.add_argument("--quiet", action="store_true")
    e.add_argument("--json", action="store_true", help="print the summary as JSON")


def _items(args, model: str | None):
    from soft2hard.evaluation import items as sources

    names = [n.strip() for n in args.tasks.split(",") if n.strip()]
    if not names:
        raise Soft2HardError("--tasks is empty")
    if args.dod is not None:
        if args.prompt:
            raise Soft2HardError("use --dod or --prompt, not both")
        dod_model, found = sources.from_dod(args.dod, names, cache_dir(args), args.max_tasks)
        return model or dod_model, found
    model = model or "smollm2-135m"
    with_prompt = sources.from_prompts(args.prompt, cache_dir(args), model, args.seed)
    known = {i.name for i in with_prompt}
    rest = sources.bare([n for n in names if n not in known], cache_dir(args), args.seed)
    chosen = [i for i in with_prompt + rest if i.name in names or i.name in known]
    return model, chosen[: args.max_tasks]


def cmd_evaluate(args) -> None:
    from soft2hard.evaluation import SourceSide, TargetsConfig, evaluate, open_targets
    from soft2hard.evaluation.run import markdown, summarize
    from soft2hard.models import canonical_model_name

    cfg = eval_options().config(args)
    model, items = _items(args, args.model)
    model = canonical_model_name(model)
    source = SourceSide(model, cache_dir(args), device=args.device, dtype=args.dtype, amp=args.amp,
                        translator_dir=args.translator, profile=args.profile, progress=not args.quiet)
    args.out.mkdir(parents=True, exist_ok=True)
    local, api = targets_options()
    deploy = TargetsConfig(**local.values(args), **api.values(args))
    with open_targets(deploy, args.out, cache_dir(args), load=model_kwargs(args, prefix="target-")) as targets:
        provenance = {"origins": {i.name: i.origin for i in items}}
        rows = evaluate(items, source, model, targets, cfg, args.out, progress=not args.quiet, provenance=provenance)
    if args.json:
        print(json.dumps(summarize(rows), indent=2))
    else:
        print(markdown(rows))
    print(f"results in {args.out}/results.json (+ .csv, .md); HTML: soft2hard report {args.out}")


COMMANDS = {"evaluate": cmd_evaluate}
