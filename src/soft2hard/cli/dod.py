"""CLI: ``dod build``, ``dod pack``, ``dod show``."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from soft2hard.cli.common import Parser, add_model_args, cache_dir
from soft2hard.dod import DEFAULT_PACK
from soft2hard.errors import Soft2HardError


def int_list(value: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in value.split(",") if x.strip())
    except ValueError:
        raise Soft2HardError(f"expected comma-separated integers, got {value!r}") from None


def load_recipes(value: str) -> tuple[dict, ...]:
    from soft2hard.dod import RECIPES

    if value in RECIPES:
        return RECIPES[value]
    try:
        recipes = json.loads(Path(value).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise Soft2HardError(f"--recipes {value!r}: not a built-in ({', '.join(RECIPES)}) nor a readable JSON "
                             f"file ({type(err).__name__})") from None
    if not isinstance(recipes, list) or not all(isinstance(r, dict) for r in recipes):
        raise Soft2HardError(f"--recipes {value}: expected a JSON list of tuning-setting objects")
    return tuple(recipes)


def add_parsers(sub) -> None:
    dod = sub.add_parser("dod", help="build, pack and show a dataset of datasets (soft prompts + references)")
    dsub = dod.add_subparsers(dest="dod_command", metavar="ACTION", parser_class=Parser)
    b = dsub.add_parser("build", help="train soft prompts for many tasks (Ray fan-out; rerun to resume)")
    b.add_argument("--out", type=Path, required=True, help="build folder (plan, runs, manifest.json)")
    add_model_args(b, model_help="source model (built-in name, directory or HF id)", amp="bfloat16")
    b.add_argument("--kinds", default="general,classification", help="comma-separated: general, classification, distilled (instructions compressed by context distillation), compositional (the comp/* generator's tasks), classification_large (word-category tasks over the 163 categories of data/categories_large.json)")
    b.add_argument("--compositional-heldout-groups", type=int, default=5,
                   help="comp/* families held out whole (kind compositional)")
    b.add_argument("--recipes", default=None,
                   help="tuning settings that vary by job: 'mixed' (built-in: prompt lengths 10-32, 40-80 steps, "
                        "vocab/random init) or a JSON file with a list of setting objects")
    b.add_argument("--bank", type=Path, default=None,
                   help="a sharded bank of this build: its jobs count as done, and an empty --out takes its plan"),
    b.add_argument("--tasks", default=None, help="explicit comma-separated task names instead of the planned families")
    b.add_argument("--instructions", type=Path, default=None,
                   help='JSON-lines file of {"inputs": TASK, "text": INSTRUCTION}: extra texts (paraphrases, '
                        "generated instructions) distilled on a general task's inputs (needs kind distilled)")
    b.add_argument("--seeds", default="0", help="seeds per training task, e.g. 0,1,2 (held-out tasks use the first)")
    b.add_argument("--split-seed", type=int, default=0)
    b.add_argument("--general-heldout", type=int, default=30, help="general tasks held out (whole groups)")
    b.add_argument("--max-tasks", type=int, default=None, help="cap on general tasks (seeded sample)")
    b.add_argument("--classification-train", type=int, default=60)
    b.add_argument("--classification-heldout", type=int, default=30)
    b.add_argument("--large-classification-train", type=int, default=200,
                   help="training label sets of kind classification_large")
    b.add_argument("--large-classification-heldout", type=int, default=30,
                   help="held-out label sets of kind classification_large")
    b.add_argument("--max-input-chars", type=int, default=400, help="drop longer examples (training cost)")
    b.add_argument("--tokens", type=int, default=20)
    b.add_argument("--steps", type=int, default=80)
    b.add_argument("--eval-every", type=int, default=20, help="checkpoint (a DoD prompt) every N steps")
    b.add_argument("--lr", type=float, default=3e-2)
    b.add_argument("--batch-size", type=int, default=8)
    b.add_argument("--patience", type=int, default=None,
                   help="stop a prompt early after N validations without a better score (default: never)")
    b.add_argument("--max-test-examples", type=int, default=40, help="test examples scored per prompt")
    b.add_argument("--workers", type=int, default=1, help="Ray workers (0: no Ray, in this process)")
    b.add_argument("--address", default=None, help="existing Ray cluster address (default: start a local one); "
                   "a multi-node cluster needs --out on a filesystem every node mounts at the same path")
    b.add_argument("--pack", type=int, default=DEFAULT_PACK,
                   help=f"prompts trained per model pass by each worker (default {DEFAULT_PACK}, measured by "
                        "bench/dod.py; 1: one run at a time)")
    b.add_argument("--max-jobs", type=int, default=None, help="stop after N runs (rerun to continue)")
    b.add_argument("--only-split", choices=["train", "heldout"], default=None,
                   help="run only this split's unfinished runs now (held-out runs go first otherwise)")
    b.add_argument("--quiet", action="store_true")
    p = dsub.add_parser("pack", help="pack a build into one bank file + manifest (small enough to commit), or "
                        "re-encode a sharded bank into a new one")
    p.add_argument("dod", type=Path, help="build folder, manifest.json, or a sharded bank to re-encode")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--best-only", action="store_true", help="keep only each run's best checkpoint")
    p.add_argument("--append", action="store_true",
                   help="add the build's finished jobs that --out lacks as a new shard (a growing, committable bank)")
    p.add_argument("--encoding", default="float16", choices=["float16", "int8", "mixed"],
                   help="how prompts are stored: float16 (default), int8 with a scale per prompt token (half the "
                        "size; its measured effect is in docs/DOD_CARD.md), or mixed: each run's best checkpoint "
                        "in float16 (evaluations read it: their figures do not move), the others in int8")
    s = dsub.add_parser("show", help="summary of a DoD: tasks per kind and split, prompts, reference sources")
    s.add_argument("dod", type=Path)
    s.add_argument("--json", action="store_true", help="print every task entry as JSON")


def cmd_dod(args) -> None:
    from soft2hard.dod.bank import SHARD_DIR, is_sharded, pack, reencode_bank
    from soft2hard.dod.manifest import Manifest

    if args.dod_command == "build":
        from soft2hard.dod.build import build
        from soft2hard.dod.config import BuildConfig
        from soft2hard.dod.plan import load_instructions

        tuning = {"n_tokens": args.tokens, "steps": args.steps, "eval_every": args.eval_every, "lr": args.lr,
                  "batch_size": args.batch_size, "max_eval_examples": 16,
                  "max_test_examples": args.max_test_examples, "init": "vocab"}
        if args.patience is not None:  # only when given: builds planned without it resume unchanged
            tuning["patience"] = args.patience
        cfg = BuildConfig(model=args.model, kinds=tuple(k.strip() for k in args.kinds.split(",") if k.strip()),
                          seeds=int_list(args.seeds), split_seed=args.split_seed,
                          general_heldout=args.general_heldout, general_max_tasks=args.max_tasks,
                          classification_train=args.classification_train,
                          classification_heldout=args.classification_heldout,
                          large_classification_train=args.large_classification_train,
                          large_classification_heldout=args.large_classification_heldout,
                          max_input_chars=args.max_input_chars, amp=args.amp, tuning=tuning,
                          tasks=tuple(t.strip() for t in args.tasks.split(",")) if args.tasks else None,
                          instructions=load_instructions(args.instructions) if args.instructions else None,
                          compositional_heldout_groups=args.compositional_heldout_groups,
                          recipes=load_recipes(args.recipes) if args.recipes else None)
        if args.workers < 0:
            raise Soft2HardError("--workers must be >= 0")
        manifest = build(args.out, cfg, cache_dir(args), workers=args.workers, address=args.address,
                         progress=not args.quiet, max_jobs=args.max_jobs, only_split=args.only_split,
                         pack=args.pack, device=args.device, dtype=args.dtype, bank=args.bank)
        n = sum(len(t.prompts) for t in manifest.tasks)
        print(f"{args.out}/manifest.json: {len(manifest.tasks)} tasks, {n} prompts")
        return
    if args.dod_command == "pack" and args.append:
        from soft2hard.dod.bank import append_shard
        from soft2hard.dod.build import finished_job_entries
        from soft2hard.dod.config import load_build

        build_dir = args.dod.parent if args.dod.is_file() else args.dod
        cfg, planned = load_build(build_dir)
        shard = append_shard(build_dir, args.out, finished_job_entries(build_dir, cfg, planned),
                             best_only=args.best_only, encoding=args.encoding)
        bank = Manifest.load(args.out) if shard or args.out.is_dir() else None
        n = sum(len(t.prompts) for t in bank.tasks) if bank else 0
        print(f"{shard or 'no new jobs'}; {args.out}: {len(bank.tasks) if bank else 0} tasks, {n} prompts")
        return
    if args.dod_command == "pack" and args.dod.is_dir() and is_sharded(args.dod):
        written = reencode_bank(args.dod, args.out, args.encoding, best_only=args.best_only)
        bank = Manifest.load(args.out)
        size = sum(f.stat().st_size for f in (args.out / SHARD_DIR).iterdir()) / 1e6
        print(f"{args.out}: {len(written)} shard(s) written, {len(bank.tasks)} tasks, "
              f"{sum(len(t.prompts) for t in bank.tasks)} prompts, {bank.settings['dtype']}, {size:.1f} MB")
        return
    if args.dod_command == "pack":
        packed = pack(Manifest.load(args.dod), args.out, best_only=args.best_only, encoding=args.encoding)
        size = (args.out / "prompts.safetensors").stat().st_size / 2**20
        print(f"{args.out}: {len(packed.tasks)} tasks, {sum(len(t.prompts) for t in packed.tasks)} prompts, "
              f"{size:.1f} MiB")
        return
    if args.dod_command == "show":
        manifest = Manifest.load(args.dod)
        if args.json:
            print(json.dumps([t.to_dict() for t in manifest.tasks], indent=2))
            return
        counts = Counter((t.kind, t.split) for t in manifest.tasks)
        print(f"{manifest.root}: model {manifest.model}, {len(manifest.tasks)} tasks, "
              f"{sum(len(t.prompts) for t in manifest.tasks)} prompts")
        for (kind, split), n in sorted(counts.items()):
            print(f"  {kind:<15} {split:<8} {n:>4} tasks")
        sources = Counter(t.reference_source for t in manifest.tasks)
        print("  reference sources: " + ", ".join(f"{k} {v}" for k, v in sources.most_common()))
        return
    raise Soft2HardError("dod needs an action: build, pack or show")


COMMANDS = {"dod": cmd_dod}
