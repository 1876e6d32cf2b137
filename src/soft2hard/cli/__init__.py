"""The ``soft2hard`` command. Thin: parse arguments, call the library, print.

Every user error (a :class:`Soft2HardError`) becomes one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from pathlib import Path

from soft2hard.cli import bias, dod, evaluate, interpret, optimize, report, translator
from soft2hard.cli.common import (
    Parser,
    add_model_args,
    cache_dir,
    load_model_from_args,
    model_kwargs,
    tuning_options,
)
from soft2hard.dod import DEFAULT_PACK
from soft2hard.errors import Soft2HardError

logger = logging.getLogger("soft2hard")
DEFAULT_DEMO_TASK = "gen/plural"


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="soft2hard", description="Make soft prompts readable and portable.")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="cache for dequantised models and datasets (default $SOFT2HARD_CACHE or ~/.cache/soft2hard)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

    sub.add_parser("models", help="list built-in models and whether they are installed and cached").add_argument(
        "--json", action="store_true")

    tasks = sub.add_parser("tasks", help="list and inspect tasks (generated, BIG-bench, your files)")
    tsub = tasks.add_subparsers(dest="tasks_command", metavar="ACTION", parser_class=Parser)
    tl = tsub.add_parser("list", help="list tasks")
    tl.add_argument("--source", default=None, choices=["generated", "compositional", "bigbench"])
    tl.add_argument("--json", action="store_true", help="print a JSON list")
    ts = tsub.add_parser("show", help="description, split sizes and 3 examples of a task")
    ts.add_argument("name", help="task name or path to a JSONL/CSV file")
    ts.add_argument("--seed", type=int, default=0)

    tune = sub.add_parser("tune", help="train a soft prompt on a frozen model; writes a PEFT adapter directory")
    add_model_args(tune)
    tune.add_argument("--task", default=None, help="task name (see 'tasks list') or a JSONL/CSV file")
    tune.add_argument("--inputs", default=None, help="for --objective distill: the inputs (a task name or file; "
                      "an alias of --task)")
    tune.add_argument("--out", type=Path, required=True, help="run directory")
    tuning_options().add_to(tune)
    tune.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    tune.add_argument("--overwrite", action="store_true", help="delete an existing run in --out first")
    tune.add_argument("--quiet", action="store_true", help="no progress bar")

    many = sub.add_parser("tune-many", help="train soft prompts for several tasks and seeds at once, in packs "
                          "that share each model pass; DIR/<task>/seed<k> is an ordinary tune run each")
    add_model_args(many)
    many.add_argument("--tasks", required=True, help="comma-separated task names or JSONL/CSV files")
    many.add_argument("--seeds", default="0", help="comma-separated seeds, one prompt per (task, seed) (default 0)")
    many.add_argument("--out", type=Path, required=True, help="folder of run directories")
    many.add_argument("--pack", type=int, default=DEFAULT_PACK,
                      help=f"prompts trained per model pass (default {DEFAULT_PACK})")
    tuning_options().add_to(many, skip=("seed",))
    many.add_argument("--resume", action="store_true", help="continue: finished runs are kept, others resume")
    many.add_argument("--overwrite", action="store_true", help="delete the existing runs first")
    many.add_argument("--quiet", action="store_true", help="no progress bar")
    many.add_argument("--json", action="store_true", help="print one JSON object per run")

    info = sub.add_parser("info", help="show a soft prompt's shape, norms and provenance; check it fits a model")
    info.add_argument("prompt", type=Path, help="PEFT adapter directory or .safetensors file")
    add_model_args(info, default=None, model_help="also check that the prompt fits this model")
    info.add_argument("--json", action="store_true")

    sc = sub.add_parser("score", help="score a saved soft prompt on a task's test split, next to no prompt")
    sc.add_argument("prompt", type=Path, help="PEFT adapter directory or .safetensors file")
    add_model_args(sc)
    sc.add_argument("--task", required=True)
    sc.add_argument("--split", default="test", choices=["train", "validation", "test"])
    sc.add_argument("--seed", type=int, default=None,
                    help="split seed (default: the seed the prompt was tuned with on this task, else 0)")
    sc.add_argument("--max-examples", type=int, default=200)
    sc.add_argument("--json", action="store_true")

    interpret.add_parsers(sub)
    dod.add_parsers(sub)
    translator.add_parsers(sub)
    optimize.add_parsers(sub)
    bias.add_parsers(sub)
    evaluate.add_parsers(sub)
    report.add_parsers(sub)

    demo = sub.add_parser("demo", help="the end-to-end demo on the built-in offline model and task")
    add_model_args(demo)
    demo.add_argument("--task", default=DEFAULT_DEMO_TASK)
    demo.add_argument("--out", type=Path, default=Path("runs/demo"))
    demo.add_argument("--steps", type=int, default=100)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--target", default="gemma3-270m", help="where the texts are deployed (default gemma3-270m)")
    demo.add_argument("--max-examples", type=int, default=30, help="test examples per condition (default 30)")
    demo.add_argument("--translator", type=Path, default=None,
                      help="translator directory (default: the one shipped for the built-in source model)")
    demo.add_argument("--profile", type=Path, default=None,
                      help="InSPEcT profile (default: the one shipped for the built-in source model)")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def cmd_models(args) -> None:
    from soft2hard.models import describe_builtin_models

    rows = describe_builtin_models(cache_dir(args))
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'name':<14} {'role':<7} {'installed':<10} {'cached':<7} summary")
    for r in rows:
        print(f"{r['name']:<14} {r['role']:<7} {str(r['installed']):<10} {str(r['cached']):<7} {r['summary']}")
    print("Any local model directory or Hugging Face model id also works with --model.")


def cmd_tasks(args) -> None:
    from soft2hard.tasks import get_task, list_tasks

    if args.tasks_command == "list":
        rows = list_tasks(source=args.source, cache_dir=cache_dir(args))
        if args.json:
            print(json.dumps(rows, indent=2))
            return
        for r in rows:
            print(f"{r['name']:<55} {r['answer_type']:<15} {r['n_examples']:>6}  {r['description'][:60]}")
        return
    if args.tasks_command == "show":
        task = get_task(args.name, cache_dir=cache_dir(args))
        splits = task.splits(seed=args.seed)
        print(f"{task.name}  ({task.source}, {task.answer_type})")
        print(f"description: {task.description}  [from {task.description_source}]")
        if task.labels:
            print(f"labels: {', '.join(task.labels)}")
        print(f"examples: {len(task.examples)}  train/validation/test: "
              f"{len(splits.train)}/{len(splits.validation)}/{len(splits.test)} (seed {args.seed})")
        print(f"template: {task.template!r} -> {task.target_template!r}")
        for ex in splits.train[:3]:
            print(f"  {ex.input!r} -> {ex.target!r}")
        return
    raise Soft2HardError("tasks needs an action: list or show")


def _tuning_config(args, seed: int | None = None):
    return tuning_options().config(args, **({} if seed is None else {"seed": seed}))


def cmd_tune(args) -> None:
    from soft2hard.tasks import get_task
    from soft2hard.tuning import tune

    cfg = _tuning_config(args)  # validate everything before loading anything or writing a file
    if args.task and args.inputs and args.task != args.inputs:
        raise Soft2HardError("give the inputs once: --task and --inputs name different tasks")
    if not (args.task or args.inputs):
        raise Soft2HardError("tune needs --task (or, for distillation, --inputs): a task name or a JSONL/CSV file")
    task = get_task(args.task or args.inputs, cache_dir=cache_dir(args))
    lm = load_model_from_args(args)
    result = tune(lm, task, cfg, args.out, resume=args.resume, overwrite=args.overwrite, progress=not args.quiet)
    m = result.metrics
    print(f"{task.name}: {m['metric']} no prompt {m['baseline_score']:.3f} -> soft prompt {m['test_score']:.3f} "
          f"(test n={m['n_test']}, best step {m['best_step']}, {m['train_seconds']:.0f} s training)")
    if "faithfulness" in m:
        f, f0 = m["faithfulness"], m["faithfulness_no_prompt"]
        print(f"distillation faithfulness (test): agreement with teacher {f0['agreement']:.3f} -> {f['agreement']:.3f}, "
              f"mean KL {f0['mean_kl']:.3f} -> {f['mean_kl']:.3f} (no prompt -> soft prompt)")
    print(f"wrote {args.out}/adapter_model.safetensors (PEFT prompt-tuning adapter) and {args.out}/metrics.json")


def cmd_tune_many(args) -> None:
    from soft2hard.packs import TuningJob, tune_many
    from soft2hard.tasks import get_task

    names = [t.strip() for t in args.tasks.split(",") if t.strip()]
    seeds = dod.int_list(args.seeds)
    if not names or not seeds:
        raise Soft2HardError("tune-many needs at least one task (--tasks A,B) and one seed (--seeds 0,1)")
    if args.objective != "task":
        raise Soft2HardError("tune-many trains task prompts; distil a text prompt with 'soft2hard tune --objective "
                             "distill'")
    if args.resume and args.overwrite:
        raise Soft2HardError("give --resume or --overwrite, not both")
    cfgs = {s: _tuning_config(args, seed=s) for s in seeds}  # validate everything before loading anything
    tasks = {n: get_task(n, cache_dir=cache_dir(args)) for n in dict.fromkeys(names)}  # bad names fail now
    slug = {n: (Path(n).stem if Path(n).suffix else n).replace("/", "__") for n in tasks}
    jobs = [TuningJob(tasks[n], cfgs[s], args.out / slug[n] / f"seed{s}", name=f"{n}@seed{s}")
            for n in tasks for s in seeds]
    lm = load_model_from_args(args)
    outcomes = tune_many(lm, jobs, pack=args.pack, resume=args.resume, overwrite=args.overwrite,
                         journal=args.out / "pack-journal.json", progress=not args.quiet)
    failed = 0
    for o in outcomes:
        m = json.loads((o.job.out / "metrics.json").read_text()) if o.error is None else None
        if args.json:
            print(json.dumps({"run": o.job.name, "out": str(o.job.out), "error": o.error,
                              **({k: m[k] for k in ("metric", "baseline_score", "test_score", "best_step")}
                                 if m else {})}))
        elif m:
            print(f"{o.job.name}: {m['metric']} no prompt {m['baseline_score']:.3f} -> soft prompt "
                  f"{m['test_score']:.3f} (best step {m['best_step']}) -> {o.job.out}")
        else:
            print(f"{o.job.name}: failed: {o.error}", file=sys.stderr)
        failed += o.error is not None
    if failed:
        raise Soft2HardError(f"{failed} of {len(outcomes)} runs failed (rerun with --resume to retry them)")


def cmd_info(args) -> None:
    from soft2hard.prompts import SoftPrompt, prompt_norm_stats

    prompt = SoftPrompt.load(args.prompt)
    info = {"path": str(args.prompt), "n_tokens": prompt.n_tokens, "d_model": prompt.d_model,
            "model": prompt.model, **prompt_norm_stats(prompt.tensor), "metadata": prompt.metadata}
    if args.model:
        from soft2hard.models import load_model

        lm = load_model(args.model, **model_kwargs(args))
        lm.check_prompt(prompt.tensor)
        vocab_norm = float(lm.vocab_embeddings().float().norm(dim=-1).mean())
        info["fits_model"] = args.model
        info["vocab_mean_norm"] = vocab_norm
    if args.json:
        print(json.dumps(info, indent=2))
        return
    for k, v in info.items():
        print(f"{k}: {v:.4f}" if isinstance(v, float) else f"{k}: {v}")


def _stored_seed(prompt, path: Path, task_name: str) -> int | None:
    """The split seed a prompt was tuned with on ``task_name``: its own metadata, else its run folder's
    ``metrics.json``/``config.json`` (a bare ``.safetensors`` inside a run); None when unknown or another task."""
    from soft2hard import atomic

    def seed_of(stored) -> int | None:
        seed = stored.get("seed") if isinstance(stored, dict) and stored.get("task") == task_name else None
        return seed if isinstance(seed, int) and not isinstance(seed, bool) else None

    if seed_of(prompt.metadata) is not None:
        return seed_of(prompt.metadata)
    folder = path if path.is_dir() else path.parent
    for name in ("metrics.json", "config.json"):
        if (folder / name).is_file():
            try:
                seed = seed_of(atomic.read_json(folder / name))
            except Soft2HardError:  # an unreadable run file: no stored seed
                continue
            if seed is not None:
                return seed
    return None


def _split_seed(prompt, path: Path, task_name: str, given: int | None) -> int:
    """Score on the split the prompt was tuned with: another seed's test split holds its training examples."""
    stored = _stored_seed(prompt, path, task_name)
    if stored is None:
        return 0 if given is None else given
    if given is not None and given != stored:
        print(f"warning: {path} was tuned on {task_name} with split seed {stored}; --seed {given} gives a "
              f"{task_name} split whose test examples it may have trained on", file=sys.stderr)
        return given
    return stored


def cmd_score(args) -> None:
    from soft2hard.prompts import SoftPrompt
    from soft2hard.scoring import score
    from soft2hard.tasks import get_task

    prompt = SoftPrompt.load(args.prompt)
    task = get_task(args.task, cache_dir=cache_dir(args))
    if args.max_examples < 1:
        raise Soft2HardError(f"--max-examples must be >= 1, got {args.max_examples}")
    seed = _split_seed(prompt, args.prompt, task.name, args.seed)
    lm = load_model_from_args(args)
    lm.check_prompt(prompt.tensor)
    examples = getattr(task.splits(seed=seed), args.split)[: args.max_examples]
    result = {"task": task.name, "split": args.split, "seed": seed, "n": len(examples),
              "metric": "accuracy" if task.answer_type == "classification" else "exact_match",
              "no_prompt": score(lm, None, task, examples),
              "soft_prompt": score(lm, prompt.tensor.to(lm.device), task, examples)}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{task.name} ({args.split}, n={len(examples)}) {result['metric']}: "
          f"no prompt {result['no_prompt']:.3f}, soft prompt {result['soft_prompt']:.3f}")


def cmd_demo(args) -> None:
    from soft2hard.demo import run_demo

    run_demo(model=args.model, task=args.task, out=args.out, steps=args.steps, seed=args.seed,
             device=args.device, dtype=args.dtype, amp=args.amp, cache_dir=cache_dir(args), target=args.target,
             max_examples=args.max_examples, progress=not args.quiet, translator=args.translator,
             profile=args.profile)


COMMANDS = {"models": cmd_models, "tasks": cmd_tasks, "tune": cmd_tune, "tune-many": cmd_tune_many,
            "info": cmd_info, "score": cmd_score,
            "demo": cmd_demo, **interpret.COMMANDS, **dod.COMMANDS,
            **translator.COMMANDS, **optimize.COMMANDS,
            **bias.COMMANDS, **evaluate.COMMANDS, **report.COMMANDS}


def _quiet_http_clients(record: logging.LogRecord) -> bool:
    """Drop the HTTP libraries' per-request INFO lines (httpx, or httpx2 as newer OpenAI clients name it)."""
    return record.levelno >= logging.WARNING or not record.name.startswith(("httpx", "httpcore"))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s",
                        stream=sys.stderr)
    if not args.verbose:  # the OpenAI client's HTTP library logs every request at INFO: one line per API call
        for handler in logging.getLogger().handlers:
            handler.addFilter(_quiet_http_clients)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is ever fetched from a model hub
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # transformers' deprecation notices about its own internals (is_gradient_checkpointing, ...)
    # say nothing a soft2hard user can act on. Renamed keywords warn at stacklevel 2, i.e. from torch's
    # Module.__call__ rather than from transformers, hence the message pattern as well as the module.
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(transformers|peft)(\.|$)")
    warnings.filterwarnings("ignore", category=FutureWarning, message=r"`\w+` is deprecated and will be removed in")
    try:
        import transformers

        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
        COMMANDS[args.command](args)
        sys.stdout.flush()  # a closed pipe fails here, inside the handler, not at interpreter exit
    except BrokenPipeError:
        return _closed_stdout()
    except Soft2HardError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; rerun with --resume to continue", file=sys.stderr)
        return 130
    return 0


def _closed_stdout() -> int:
    """The reader of our stdout went away (``soft2hard ... | head -1``): stop quietly, as a SIGPIPE death would."""
    try:  # point stdout at devnull so that the flush at interpreter exit cannot raise again
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout is not a real file (tests capture it)
        pass
    return 141  # 128 + SIGPIPE, what a shell reports for `yes | head -1`


if __name__ == "__main__":
    sys.exit(main())
