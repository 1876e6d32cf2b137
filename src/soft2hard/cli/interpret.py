"""CLI: ``describe`` (any interpreter of :mod:`soft2hard.interpret.registry`) and ``inspect calibrate``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from soft2hard.cli.common import ConfigOptions, Parser, add_model_args, cache_dir, load_model_from_args
from soft2hard.errors import Soft2HardError
from soft2hard.interpret.registry import NAMES as METHODS


def grid_options():
    """The InSPEcT grid's :class:`~soft2hard.interpret.inspection.InspectConfig` options (``--pairs`` is added
    beside them: it replaces the grid by explicit pairs)."""
    from soft2hard.interpret.inspection import INJECT_MODES, InspectConfig
    from soft2hard.interpret.selection import parse_layers

    layers = "'1-29', '2,4,8' or '1-29:2' (default 1..L-1)"
    return ConfigOptions(
        InspectConfig, ("source_layers", "target_layers", "n_demos", "demo_seed", "inject", "max_new_tokens",
                        "batch_size"),
        flags={"source_layers": "sources", "target_layers": "targets"}, choices={"inject": INJECT_MODES},
        helps={"source_layers": f"source layers (blocks read), e.g. {layers}",
               "target_layers": f"target layers (blocks overwritten), same syntax: {layers}"},
        parsers={"source_layers": parse_layers, "target_layers": parse_layers})


def _add_grid_args(p: argparse.ArgumentParser) -> None:
    grid_options().add_to(p)
    p.add_argument("--pairs", default=None, help="explicit SOURCE:TARGET pairs, e.g. '3:5,10:2'")


def add_parsers(sub) -> None:
    d = sub.add_parser("describe", help="describe a soft prompt in text (projection, InSPEcT or the translator)")
    d.add_argument("prompt", type=Path, help="PEFT adapter directory or .safetensors file")
    d.add_argument("--method", default="inspect", choices=METHODS,
                   help="interpreter (default inspect: label-free InSPEcT); inspect_oracle is --oracle")
    add_model_args(d, default=None)
    d.add_argument("--projection-metric", default="cosine", choices=["cosine", "l2"])
    _add_grid_args(d)
    d.add_argument("--oracle", action="store_true",
                   help="run the grid and pick the pair whose text best matches the reference (needs one); "
                        "the same as --method inspect_oracle")
    d.add_argument("--translator", type=Path, default=None,
                   help="for --method translator: its folder (default: the one shipped for the model)")
    d.add_argument("--cue", default="instruction", choices=["instruction", "labels"],
                   help="for --method translator: ask for the task instruction or for the label set")
    d.add_argument("--reference", default=None, help="reference text to score descriptions against")
    d.add_argument("--task", default=None, help="take the reference (and labels) from this task")
    d.add_argument("--score-metric", default="rouge_l", choices=["rouge_l", "embedding_cosine", "class_rate"])
    d.add_argument("--profile", type=Path, default=None, help="label-free profile (default: the model's calibrated one)")
    d.add_argument("--top", type=int, default=5, help="how many scored descriptions to print")
    d.add_argument("--heatmap", type=Path, default=None, help="save a PNG of the score over the layer grid")
    d.add_argument("--json", action="store_true")

    ins = sub.add_parser("inspect", help="InSPEcT tools: calibrate label-free layer pairs")
    isub = ins.add_subparsers(dest="inspect_command", metavar="ACTION", parser_class=Parser)
    c = isub.add_parser("calibrate", help="pick layer pairs on training prompts with references; store a profile")
    c.add_argument("prompts", nargs="+", type=Path, help="tuned prompt directories (their task gives the reference)")
    add_model_args(c)
    _add_grid_args(c)
    c.add_argument("--score-metric", default="rouge_l", choices=["rouge_l", "embedding_cosine", "class_rate"])
    c.add_argument("--top-k", type=int, default=3, help="pairs kept in the profile")
    c.add_argument("--profile", type=Path, default=None, help="where to write it (default: the model's profile)")


def _inspect_config(args):
    return grid_options().config(args)


def _reference(args):
    if args.reference and args.task:
        raise Soft2HardError("give either --reference or --task, not both")
    if args.task:
        from soft2hard.interpret.selection import reference_text
        from soft2hard.tasks import get_task

        task = get_task(args.task, cache_dir=cache_dir(args))
        return reference_text(task), task.labels
    return args.reference, None


def cmd_describe(args) -> None:
    from soft2hard.interpret.registry import InterpreterSettings, get_interpreter
    from soft2hard.interpret.selection import parse_pairs, score_texts
    from soft2hard.prompts import SoftPrompt

    method = "inspect_oracle" if args.oracle else args.method
    if args.oracle and args.method not in ("inspect", "inspect_oracle"):
        raise Soft2HardError(f"--oracle picks an InSPEcT layer pair; it does not apply to --method {args.method}")
    prompt = SoftPrompt.load(args.prompt)
    reference, labels = _reference(args)
    if method == "inspect_oracle" and not reference:
        raise Soft2HardError("--oracle needs a reference: pass --reference TEXT or --task NAME")
    if args.heatmap and not reference:
        raise Soft2HardError("--heatmap plots scores, so it needs --reference or --task")
    grid_asked = method == "inspect_oracle" or args.pairs or args.sources or args.targets or args.heatmap
    args.model = args.model or prompt.model or "smollm2-135m"
    lm = load_model_from_args(args)
    lm.check_prompt(prompt.tensor)
    settings = InterpreterSettings(
        cache_dir=cache_dir(args), profile=args.profile, translator=args.translator,
        projection_metric=args.projection_metric, grid=_inspect_config(args) if grid_asked else None,
        pairs=parse_pairs(args.pairs) if args.pairs else None, oracle_metric=args.score_metric,
        progress=not args.json, share_model=True)
    descs = get_interpreter(method, lm, settings).describe(prompt.tensor, cue=args.cue, reference=reference,
                                                           labels=labels)
    if reference and method != "inspect_oracle":
        for d, s in zip(descs, score_texts([d.text for d in descs], reference, args.score_metric, labels)):
            d.score = float(s)
            d.details["score_metric"] = args.score_metric
    if args.heatmap:
        from soft2hard.plots import layer_heatmap

        layer_heatmap(descs, args.heatmap, title=f"{args.prompt.name}: {args.score_metric} per layer pair",
                      metric=args.score_metric)
    if args.json:
        print(json.dumps({"prompt": str(args.prompt), "model": lm.name, "method": method, "reference": reference,
                          "descriptions": [d.to_dict() for d in descs]}, indent=2))
        return
    _print_descriptions(descs, args, reference)


def _print_descriptions(descs, args, reference) -> None:
    if descs and descs[0].method == "projection":
        d = descs[0]
        key = "cosine" if "cosine" in d.details else "l2_distance"
        print(f"projection ({d.details['metric']}): {d.text!r}")
        print("  " + "  ".join(f"{tok}:{v:.2f}" for tok, v in zip(d.details["tokens"], d.details[key])))
    elif descs and descs[0].method == "translator":
        d = descs[0]
        tag = f"  {args.score_metric}={d.score:.3f}" if d.score is not None else ""
        print(f"translator ({d.details['cue']}): {d.text!r}{tag}")
    else:
        if descs and descs[0].oracle:
            print(f"ORACLE selection (best of {len(descs)} pairs by {args.score_metric} against the reference):")
        shown = descs[: args.top] if reference else descs
        for d in shown:
            tag = f" {args.score_metric}={d.score:.3f}" if d.score is not None else ""
            sel = d.details.get("selection", "")
            print(f"  layers {d.layers[0]:>2}->{d.layers[1]:<2}{tag}  {d.text!r}" + (f"  [{sel}]" if sel else ""))
    if reference:
        print(f"reference: {reference!r}")
    if args.heatmap:
        print(f"heatmap: {args.heatmap}")


def cmd_inspect(args) -> None:
    if args.inspect_command != "calibrate":
        raise Soft2HardError("inspect needs an action: calibrate")
    from soft2hard.interpret.selection import calibrate, profile_path, reference_text
    from soft2hard.prompts import SoftPrompt
    from soft2hard.tasks import get_task

    cfg = _inspect_config(args)
    items = []
    for path in args.prompts:
        prompt = SoftPrompt.load(path)
        task_name = prompt.metadata.get("task")
        if not task_name:
            raise Soft2HardError(f"{path}: no task recorded in its metadata, so it has no reference to calibrate on")
        task = get_task(task_name, cache_dir=cache_dir(args))
        items.append((str(path), prompt.tensor, reference_text(task), task.labels))
    lm = load_model_from_args(args)
    for _, tensor, _, _ in items:
        lm.check_prompt(tensor)
    profile = calibrate(lm, [(n, t.to(lm.device), r, lab) for n, t, r, lab in items], cfg,
                        metric=args.score_metric, top_k=args.top_k)
    out = args.profile or profile_path(cache_dir(args), lm.name)
    profile.save(out)
    best = ", ".join(f"{s}->{t} ({profile.mean_scores[f'{s},{t}']:.3f})" for s, t in profile.pairs)
    print(f"calibrated on {len(items)} prompts; best pairs by mean {args.score_metric}: {best}")
    print(f"profile written to {out}; 'soft2hard describe PROMPT' now uses it")


COMMANDS = {"describe": cmd_describe, "inspect": cmd_inspect}
