"""CLI: ``bias probe`` (elicited features of one prompt) and ``bias study`` (the whole cue-rate experiment)."""

from __future__ import annotations

import json
from pathlib import Path

from soft2hard.cli.common import Parser, add_model_args, cache_dir, load_model_from_args
from soft2hard.errors import Soft2HardError


def add_parsers(sub) -> None:
    b = sub.add_parser("bias", help="surface biased features a soft prompt learned (elaborated InSPEcT)")
    bsub = b.add_subparsers(dest="bias_command", metavar="ACTION", parser_class=Parser)
    p = bsub.add_parser("probe", help="list the features (cue words) the elaborated inspection elicits")
    p.add_argument("prompt", type=Path, help="PEFT adapter directory or .safetensors file")
    add_model_args(p)
    p.add_argument("--cue", action="append", default=None,
                   help="a cue to count, KIND:TEXT[@prefix|@suffix], e.g. word:honestly (repeatable; default: all)")
    p.add_argument("--layers", default="1-29:4", help="probe grid, used as sources and targets (default 1-29:4)")
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--json", action="store_true")
    s = bsub.add_parser("study", help="train prompts at several cue rates; flip rate vs cue mentions; table + plot")
    add_model_args(s)
    s.add_argument("--tasks", required=True, help="comma-separated classification tasks")
    s.add_argument("--cues", required=True, help="comma-separated cues, e.g. word:honestly,punctuation:!!@suffix")
    s.add_argument("--rates", default="0,0.5,0.9,1", help="cue/label co-occurrence rates")
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--steps", type=int, default=100)
    s.add_argument("--layers", default="1-29:4")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--quiet", action="store_true")


def _floats(spec: str, what: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in spec.split(",") if x.strip())
    except ValueError:
        raise Soft2HardError(f"{what} takes comma-separated numbers, got {spec!r}") from None


def cmd_bias(args) -> None:
    from soft2hard.bias.cues import parse_cue
    from soft2hard.bias.probe import (
        cue_mention_rate,
        default_cues,
        elaborated_config,
        elicited_features,
        probe,
    )
    from soft2hard.interpret.selection import parse_layers

    layers = parse_layers(args.layers)
    if args.bias_command == "probe":
        from soft2hard.prompts import SoftPrompt

        cues = [parse_cue(c) for c in args.cue] if args.cue else default_cues()
        prompt = SoftPrompt.load(args.prompt)
        lm = load_model_from_args(args)
        lm.check_prompt(prompt.tensor)
        descs = probe(lm, prompt.tensor.to(lm.device), elaborated_config(source_layers=layers, target_layers=layers))
        result = {"features": elicited_features(descs, args.top), "n_pairs": len(descs),
                  "cue_mention_rates": {c.label(): cue_mention_rate(descs, c) for c in cues},
                  "examples": [d.text for d in descs[:5]]}
        if args.json:
            print(json.dumps(result, indent=2))
            return
        print(f"features named over {len(descs)} layer pairs (count):")
        for feature, n in result["features"]:
            print(f"  {n:>4}  {feature}")
        print("cue mention rates: " + ", ".join(f"{k} {v:.3f}" for k, v in result["cue_mention_rates"].items()))
        return
    if args.bias_command == "study":
        from soft2hard.bias.study import StudyConfig, run_study
        from soft2hard.tasks import get_task
        from soft2hard.tuning import TuningConfig

        rates = _floats(args.rates, "--rates")
        cues = [parse_cue(c) for c in args.cues.split(",") if c.strip()]
        tasks = [get_task(t.strip(), cache_dir=cache_dir(args)) for t in args.tasks.split(",") if t.strip()]
        for t in tasks:
            if t.labels is None:
                raise Soft2HardError(f"task {t.name!r} is not a classification task; the bias study needs labels")
        cfg = StudyConfig(rates=rates, seed=args.seed, layers=tuple(layers),
                          tuning=TuningConfig(steps=args.steps, eval_every=max(1, args.steps // 2)))
        lm = load_model_from_args(args)
        rows, summary = run_study(lm, tasks, cues, cfg, args.out, progress=not args.quiet)
        print((args.out / "study.md").read_text())
        print(f"wrote {args.out}/study.json, study.md and study.png")
        return
    raise Soft2HardError("bias needs an action: probe or study")


COMMANDS = {"bias": cmd_bias}
