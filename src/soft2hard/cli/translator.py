"""CLI: ``translator train``, ``translator eval`` and ``translate``."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from soft2hard.cli.common import Parser, add_model_args, cache_dir, load_model_from_args, model_kwargs
from soft2hard.errors import Soft2HardError
from soft2hard.interpret.registry import NAMES

logger = logging.getLogger(__name__)
DEFAULT_CANDIDATES = 8  # verified by default (issue 21): about 17 s per prompt on a 2-core CPU (BENCHMARKS.md)


def add_parsers(sub) -> None:
    tr = sub.add_parser("translator", help="train and evaluate the learned soft-to-hard translator")
    tsub = tr.add_subparsers(dest="translator_command", metavar="ACTION", parser_class=Parser)
    t = tsub.add_parser("train", help="fine-tune the source model with LoRA to turn soft prompts into text")
    t.add_argument("--dod", type=Path, nargs="+", required=True,
                   help="DoD build folder, bank or manifest.json; several are trained on together (training tasks "
                        "of one that would leak into a held-out task of another are left out)")
    t.add_argument("--out", type=Path, required=True)
    t.add_argument("--epochs", type=int, default=8)
    t.add_argument("--references", default="all", choices=["all", "first"],
                   help="all: a task's paraphrases take turns as the target (default); first: its reference only")
    t.add_argument("--validation-tasks", type=int, default=0,
                   help="set aside about this many training tasks (whole groups) to pick the checkpoint on "
                        "(--validation-metric; default 0: none, the last checkpoint is published)")
    t.add_argument("--eval-every", type=int, default=0, help="steps between validation passes (default: per epoch)")
    t.add_argument("--validation-metric", default="loss", choices=["loss", "quality"],
                   help="what picks the checkpoint: loss (mean target loss) or quality (greedy translations of the "
                        "validation prompts: ROUGE-L for instructions, class rate for label lists)")
    t.add_argument("--patience", type=int, default=0,
                   help="stop after this many validation passes without improvement (default 0: never)")
    t.add_argument("--max-train-tasks", type=int, default=0,
                   help="train on a seeded subset of this many training tasks (learning curves; default 0: all)")
    t.add_argument("--max-tasks-per-family", type=int, default=0,
                   help="keep at most N training tasks of each family (comp/<family>, bigbench, ni, ...; 0: all)")
    t.add_argument("--cap-kinds", default="",
                   help="apply --max-tasks-per-family only to these kinds, e.g. general (default: every kind)")
    t.add_argument("--repeat", default="",
                   help="repeat a family's examples per epoch, e.g. bigbench=3,ni=3 (up-weights small families)")
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--batch-size", type=int, default=8)
    t.add_argument("--lora-r", type=int, default=8)
    t.add_argument("--prompts", default="all", choices=["all", "best"], help="which checkpoints of each run")
    t.add_argument("--kinds", default=None, help="train only on these task kinds (e.g. general,classification)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--save-every", type=int, default=50)
    add_model_args(t, model=False, amp="bfloat16", title="model (the DoD's)")
    t.add_argument("--resume", action="store_true")
    t.add_argument("--overwrite", action="store_true")
    t.add_argument("--quiet", action="store_true")

    e = tsub.add_parser("eval", help="held-out comparison of the interpreters: projection, InSPEcT (label-free, "
                        "oracle), translator")
    e.add_argument("--dod", type=Path, nargs="+", required=True,
                   help="DoD folder(s): the held-out tasks of all of them, clean of what the translator trained on")
    e.add_argument("--translator", type=Path, default=None, help="translator folder (default: the shipped one)")
    e.add_argument("--out", type=Path, required=True, help="folder for rows.json, summary.json, results.md")
    e.add_argument("--oracle-layers", default="1-29:4", help="layer grid searched by oracle InSPEcT")
    e.add_argument("--max-tasks", type=int, default=None)
    e.add_argument("--methods", default=",".join(NAMES),
                   help=f"comma-separated interpreters (default all: {', '.join(NAMES)})")
    e.add_argument("--profile", type=Path, default=None, help="label-free InSPEcT profile (default: the model's)")
    add_model_args(e, model=False, title="model (the DoD's)")

    tl = sub.add_parser("translate", help="turn a soft prompt into a text prompt with the learned translator")
    tl.add_argument("prompt", type=Path, help="PEFT adapter directory or .safetensors file")
    add_model_args(tl)
    tl.add_argument("--translator", type=Path, default=None, help="translator folder (default: the shipped one)")
    tl.add_argument("--cue", default=None, choices=["instruction", "labels"],
                    help="ask for the task instruction or for the label set (default: labels for a classifier's "
                         "prompt, instruction for a generation prompt, both when its metadata does not say; with "
                         "--candidates, both unless given)")
    tl.add_argument("--max-new-tokens", type=int, default=64)
    tl.add_argument("--candidates", type=int, default=None,
                    help="N translator candidates (greedy, beam, seeded samples) and the label-free InSPEcT text, "
                         "each scored on the source model by faithfulness to the soft prompt on unlabelled inputs; "
                         "the best is returned, with verified: false when none beats the empty text (default "
                         f"{DEFAULT_CANDIDATES} when the prompt names its task or --inputs is given, else the greedy "
                         "translation with a notice; 1: the greedy translation, unverified)")
    tl.add_argument("--inputs", default=None,
                    help="for --candidates: task name or JSONL/CSV file whose validation inputs are scored "
                         "(default: the task named in the prompt's metadata)")
    tl.add_argument("--n-inputs", type=int, default=16, help="for --candidates: inputs scored (default 16)")
    tl.add_argument("--labelled", type=int, default=0,
                    help="for --candidates: also report accuracy on this many training examples (never ranks)")
    tl.add_argument("--seed", type=int, default=0, help="seed of the sampled candidates")
    tl.add_argument("--no-inspect", action="store_true",
                    help="for --candidates: leave out the label-free InSPEcT text (a candidate by default; it "
                         "needs the model's InSPEcT profile, or --profile)")
    tl.add_argument("--profile", type=Path, default=None,
                    help="for --candidates: label-free InSPEcT profile (default: the model's calibrated one)")
    tl.add_argument("--json", action="store_true")


def cmd_translate(args) -> None:
    from soft2hard.models import canonical_model_name
    from soft2hard.prompts import SoftPrompt

    args.cue_given, args.cue = args.cue is not None, args.cue or "instruction"
    prompt = SoftPrompt.load(args.prompt)
    if prompt.model and canonical_model_name(prompt.model) != canonical_model_name(args.model):
        raise Soft2HardError(f"{args.prompt} was trained on {prompt.model!r}, but the translator reads prompts of "
                             f"{args.model!r}; translate it with a translator for {prompt.model!r}")
    from soft2hard.interpret.registry import InterpreterSettings, get_interpreter

    if (args.candidates is not None and args.candidates < 1) or args.n_inputs < 1 or args.labelled < 0:
        raise Soft2HardError("--candidates and --n-inputs must be >= 1, --labelled >= 0")
    task = _verification_task(args, prompt)
    lm = load_model_from_args(args)
    lm.check_prompt(prompt.tensor)
    settings = InterpreterSettings(cache_dir=cache_dir(args), translator=args.translator, profile=args.profile,
                                   max_new_tokens=args.max_new_tokens, share_model=task is None,
                                   load={"device": args.device, "dtype": args.dtype, "amp": args.amp})
    interpreter = get_interpreter("translator", lm, settings)
    if task is not None:
        _print_verdict(args, lm, interpreter, prompt, task)
        return
    cues = [args.cue] if args.cue_given else default_cues(prompt.metadata)
    texts = {cue: interpreter.describe(prompt.tensor, cue=cue)[0].text for cue in cues}
    if args.json:
        print(json.dumps({"text": texts[cues[0]], "method": "translator", "cue": cues[0], "texts": texts,
                          "prompt": str(args.prompt), "model": lm.name}, indent=2))
        return
    if len(cues) == 1:
        print(texts[cues[0]])
        return
    for cue in cues:
        print(f"{cue}: {texts[cue]}")


def default_cues(metadata: dict) -> list[str]:
    """The cues to ask when none is given: a classifier's prompt (its metadata's answer type) gets ``labels``, a
    generation prompt ``instruction``, and a prompt of unknown kind both."""
    kind = metadata.get("answer_type")
    task = metadata.get("task")
    if kind is None and isinstance(task, str) and not task.startswith("bigbench/"):  # a prompt saved before the field
        from soft2hard.tasks import get_task

        try:
            kind = get_task(task).answer_type  # the generated registries are local and fast
        except Soft2HardError:
            kind = None
    if kind == "classification":
        return ["labels"]
    if kind == "generation":
        return ["instruction"]
    return ["instruction", "labels"]


def _inputs_task(args, prompt):
    from soft2hard.tasks import get_task

    name = args.inputs or prompt.metadata.get("task")
    if not name:
        raise Soft2HardError(f"{args.prompt} names no task in its metadata: give --inputs TASK|FILE, whose inputs "
                             "the candidates are scored on")
    return get_task(name, cache_dir=cache_dir(args))


def _verification_task(args, prompt):
    """The task whose inputs the candidates are verified on, or None for the greedy translation: asked for with
    ``--candidates 1``, or when ``--candidates`` was not given and no inputs are at hand (said in a notice)."""
    if args.candidates is not None:
        return _inputs_task(args, prompt) if args.candidates > 1 else None
    try:
        task = _inputs_task(args, prompt)
    except Soft2HardError as err:
        logger.warning("warning: the translation is not verified (%s)", err)
        return None
    args.candidates = DEFAULT_CANDIDATES
    return task


def _print_verdict(args, lm, interpreter, prompt, task) -> None:
    from soft2hard.interpret.registry import get_interpreter
    from soft2hard.interpret.selection import find_profile
    from soft2hard.interpret.verify import select_translation, selection_inputs

    seed = int(prompt.metadata.get("seed", 0)) if not args.inputs else 0  # the prompt's own split
    cues = (args.cue,) if args.cue_given else ("instruction", "labels")
    tensor = prompt.tensor.to(lm.device)
    no_inspect = args.no_inspect
    if not no_inspect and args.profile is None and not find_profile(cache_dir(args), lm.name).exists():
        logger.info("the label-free InSPEcT text is not a candidate: %s has no calibrated InSPEcT profile "
                    "(soft2hard calibrate, or --profile)", lm.name)
        no_inspect = True
    extra = [] if no_inspect else [
        (get_interpreter("inspect", lm, interpreter.settings).describe(tensor)[0].text, "inspect")]
    inputs = selection_inputs(task, seed, args.n_inputs)
    verdict = select_translation(lm, interpreter.translator, tensor, task, inputs, n=args.candidates,
                                 seed=args.seed, cues=cues, extra=extra, max_new_tokens=args.max_new_tokens,
                                 labelled=task.splits(seed=seed).train[:args.labelled])
    if args.json:
        print(json.dumps({**verdict.to_dict(), "method": "translator", "task": task.name,
                          "prompt": str(args.prompt), "model": lm.name}, indent=2))
        return
    print(verdict.best.text)
    flag = {"agreement": "verified", None: "NOT verified: no candidate beats the empty text",
            "kl": "verified by a lower KL only (no more answers agree than with no text)"}[verdict.verified_by]
    print(f"  {flag}; agreement {verdict.best.agreement:.3f} (empty text {verdict.empty.agreement:.3f}) on "
          f"{verdict.n_inputs} inputs of {task.name}; {len(verdict.ranked)} candidates in {verdict.seconds:.0f} s")


def cmd_translator(args) -> None:
    from soft2hard.dod.manifest import Manifest
    from soft2hard.models import load_model

    if args.translator_command == "train":
        from soft2hard.dod.manifest import without_leaking_training
        from soft2hard.interpret.translator import TranslatorConfig
        from soft2hard.interpret.translator_training import family_counts, prepare_examples, train_translator

        cfg = TranslatorConfig(lr=args.lr, epochs=args.epochs, batch_size=args.batch_size, lora_r=args.lora_r,
                               lora_alpha=2 * args.lora_r, seed=args.seed, save_every=args.save_every,
                               prompts=args.prompts, references=args.references,
                               validation_tasks=args.validation_tasks, eval_every=args.eval_every,
                               patience=args.patience, max_train_tasks=args.max_train_tasks,
                               validation_metric=args.validation_metric,
                               max_tasks_per_family=args.max_tasks_per_family,
                               cap_kinds=args.cap_kinds, repeat=args.repeat)
        manifest = Manifest.load_many(args.dod)
        if args.kinds:
            kinds = {k.strip() for k in args.kinds.split(",")}
            manifest.tasks = [t for t in manifest.tasks if t.kind in kinds]
        manifest, dropped = without_leaking_training(manifest)
        if dropped:
            print(f"left out {len(dropped)} training tasks that would leak into held-out tasks (e.g. "
                  f"{next(iter(dropped))}: {next(iter(dropped.values()))})")
        examples, validation = prepare_examples(manifest, cfg)
        lm = load_model(manifest.model, **model_kwargs(args))
        tr = train_translator(lm, examples, cfg, args.out, resume=args.resume, overwrite=args.overwrite,
                              progress=not args.quiet, validation=validation,
                              extra_meta={"dod": [str(p) for p in args.dod], "kinds": args.kinds or "all",
                                          "train_tasks": len({ex.task for ex in examples}),
                                          "train_families": family_counts(examples),
                                          "left_out_leaking": sorted(dropped)})
        chosen = f", checkpoint of step {tr.meta['best_step']} by validation {cfg.validation_metric}" if validation else ""
        print(f"{args.out}: translator trained on {len(examples)} examples of {tr.meta['train_tasks']} tasks in "
              f"{tr.meta['train_seconds']:.0f} s (final loss {tr.meta['final_loss']:.3f}{chosen})")
        return
    if args.translator_command == "eval":
        from soft2hard.interpret.comparison import compare_interpreters, write_results

        methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
        manifest = Manifest.load_many(args.dod)
        rows, summary = compare_interpreters(manifest, args.translator, cache_dir(args), device=args.device,
                                             dtype=args.dtype, amp=args.amp, oracle_layers=args.oracle_layers,
                                             max_tasks=args.max_tasks, profile_path=args.profile, methods=methods)
        write_results(args.out, rows, summary)
        print((args.out / "results.md").read_text())
        return
    raise Soft2HardError("translator needs an action: train or eval")


COMMANDS = {"translator": cmd_translator, "translate": cmd_translate}
