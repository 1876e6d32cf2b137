"""CLI: ``evaluate`` (tasks x conditions x targets -> results table)."""

from __future__ import annotations

import json
from pathlib import Path

from soft2hard.cli.common import add_model_args, cache_dir, model_kwargs
from soft2hard.errors import Soft2HardError


def add_parsers(sub) -> None:
    from soft2hard.evaluation.conditions import CONDITIONS, DEFAULT_CONDITIONS

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
    tgt.add_argument("--target", default="gemma3-270m", help="local target model (built-in, directory or HF id); "
                     "'none' for no local target (default gemma3-270m)")
    add_model_args(tgt, model=False, prefix="target-")
    tgt.add_argument("--target-mode", default="auto", choices=["auto", "completion", "chat"])
    tgt.add_argument("--base-url", default=None, help="an OpenAI-compatible API, e.g. http://127.0.0.1:8000/v1")
    tgt.add_argument("--api-model", default=None, help="the model name the API serves")
    tgt.add_argument("--api-key", default=None, help="API key (default $OPENAI_API_KEY; never logged or cached)")
    tgt.add_argument("--api-mode", default="auto", choices=["auto", "completion", "chat"],
                     help="auto: chat for instruction models (by name), completions otherwise")
    tgt.add_argument("--serve", default=None, metavar="MODEL",
                     help="start llama.cpp's server for a built-in model on 127.0.0.1 and use it as the API target")
    tgt.add_argument("--concurrency", type=int, default=4)
    tgt.add_argument("--max-retries", type=int, default=4)
    tgt.add_argument("--timeout", type=float, default=60.0, help="seconds per API request")
    tgt.add_argument("--api-cache", type=Path, default=None, help="SQLite response cache (default OUT/api_cache.sqlite)")
    ev = e.add_argument_group("conditions")
    ev.add_argument("--conditions", default=",".join(DEFAULT_CONDITIONS),
                    help=f"comma-separated, from {', '.join(CONDITIONS)} (default: all but pez and rlprompt)")
    ev.add_argument("--k-shot", type=int, default=3)
    ev.add_argument("--max-examples", type=int, default=50, help="test examples per task (default 50)")
    ev.add_argument("--seed", type=int, default=0, help="few-shot demo sampling; split seed of bare tasks")
    ev.add_argument("--faithfulness-examples", type=int, default=24)
    ev.add_argument("--pez-steps", type=int, default=150)
    ev.add_argument("--pez-fluency", type=float, default=0.3, help="PEZ interpretability weight w in [0, 1)")
    ev.add_argument("--rlprompt-steps", type=int, default=150)
    ev.add_argument("--rlprompt-lambda", type=float, default=0.1,
                    help="RLPrompt perplexity penalty lambda >= 0 (classification tasks only)")
    ev.add_argument("--inspect-grid", default=None, metavar="LAYERS",
                    help="also score an InSPEcT layer grid per task for the report's heatmap, e.g. 1-29:7")
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


def _targets(args, server_holder: list):
    from soft2hard.evaluation import LazyTarget
    from soft2hard.models import canonical_model_name

    targets = []
    if args.target and args.target.lower() != "none":
        name = canonical_model_name(args.target)

        def make_local():
            from soft2hard.models import load_model
            from soft2hard.targets import LocalTarget

            lm = load_model(name, **model_kwargs(args, prefix="target-"))
            return LocalTarget(lm, mode=args.target_mode)

        targets.append(LazyTarget(f"local:{name}", make_local))
    base_url, api_model, identity = args.base_url, args.api_model, None
    if args.serve:
        if base_url:
            raise Soft2HardError("use --serve or --base-url, not both")
        from soft2hard.serving import LlamaServer, gguf_path

        server = LlamaServer(gguf_path(canonical_model_name(args.serve), cache_dir(args)),
                             log=args.out / "server.log", alias=canonical_model_name(args.serve))
        server_holder.append(server.start())
        base_url, api_model, identity = server.base_url, api_model or server.alias, server.identity
    if base_url or api_model:
        if not (base_url and api_model):
            raise Soft2HardError("an API target needs both --base-url and --api-model")

        def make_api():
            from soft2hard.targets import APITarget

            return APITarget(base_url, api_model, api_key=args.api_key, mode=args.api_mode,
                             cache_path=args.api_cache or args.out / "api_cache.sqlite",
                             concurrency=args.concurrency, max_retries=args.max_retries, timeout=args.timeout,
                             identity=identity)

        targets.append(LazyTarget(f"api:{api_model}", make_api))
    return targets


def cmd_evaluate(args) -> None:
    from soft2hard.evaluation import EvalConfig, SourceSide, evaluate
    from soft2hard.evaluation.run import markdown, summarize
    from soft2hard.models import canonical_model_name

    cfg = EvalConfig(conditions=tuple(c.strip() for c in args.conditions.split(",") if c.strip()),
                     k_shot=args.k_shot, max_examples=args.max_examples, seed=args.seed,
                     faithfulness_examples=args.faithfulness_examples, pez_steps=args.pez_steps,
                     pez_fluency=args.pez_fluency, rlprompt_steps=args.rlprompt_steps,
                     rlprompt_lambda=args.rlprompt_lambda, inspect_grid=args.inspect_grid)
    model, items = _items(args, args.model)
    model = canonical_model_name(model)
    source = SourceSide(model, cache_dir(args), device=args.device, dtype=args.dtype, amp=args.amp,
                        translator_dir=args.translator, profile=args.profile, progress=not args.quiet)
    args.out.mkdir(parents=True, exist_ok=True)
    servers: list = []
    try:
        targets = _targets(args, servers)
        provenance = {"origins": {i.name: i.origin for i in items}}
        rows = evaluate(items, source, model, targets, cfg, args.out, progress=not args.quiet, provenance=provenance)
    finally:
        for server in servers:
            server.stop()
    if args.json:
        print(json.dumps(summarize(rows), indent=2))
    else:
        print(markdown(rows))
    print(f"results in {args.out}/results.json (+ .csv, .md); HTML: soft2hard report {args.out}")


COMMANDS = {"evaluate": cmd_evaluate}
