"""Training the translator (METHODS.md §4, §8): which examples, which validation tasks, and the training loop.

Examples: every prompt of a training task, with its cue and target texts. A general task's targets are its
instruction and paraphrases; a classification task's ``labels`` target is its label list ("bird, candy") and,
when the task also has sentence instructions (compositional tasks do), it gives a second example with the
``instruction`` cue, so each cue keeps one meaning. Paraphrases take turns across epochs.

Validation: whole groups of training tasks (per kind, seeded) are set aside; their mean target loss (or, with
``validation_metric="quality"``, the quality of their greedy translations), measured every ``eval_every`` steps,
picks the published checkpoint and stops training after ``patience`` passes without improvement. The held-out tasks of the DoD are never looked at here.

Training follows tuning.py: batches are a function of (seed, step), checkpoints hold the LoRA weights, AdamW
moments and the validation history, and a resumed run is identical to an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch
from safetensors.torch import load_file
from tqdm.auto import tqdm

from soft2hard import atomic, runs
from soft2hard.errors import Soft2HardError
from soft2hard.interpret.translator import (
    CUES,
    KIND_CUE,
    STEP_KEY,
    TRANSLATOR_META,
    TranslationExample,
    Translator,
    TranslatorConfig,
    _load_adapter_weights,
    _save_adapter,
    apply_lora,
    batch_loss,
    parse_repeat,
    translate_batch,
)
from soft2hard.lm import LanguageModel
from soft2hard.provenance import provenance
from soft2hard.training import (
    STAGING,
    load_optimizer_tensors,
    optimizer_tensors,
    publish,
    set_lr,
    warmup_cosine,
)

logger = logging.getLogger(__name__)
VALIDATION_BATCH = 16


def task_examples(task, entry, tensor, cfg: TranslatorConfig) -> list[TranslationExample]:
    """The examples one prompt of ``task`` gives (see the module docstring)."""
    paraphrases = tuple(task.references or ()) if cfg.references == "all" else ()
    if task.kind != "classification":
        return [TranslationExample(tensor, KIND_CUE[task.kind], task.reference, task.name, paraphrases)]
    label_list = ", ".join(task.labels) if task.labels else task.reference
    out = [TranslationExample(tensor, "labels", label_list, task.name)]
    sentences = tuple(t for t in (task.reference, *paraphrases) if t != label_list)
    if sentences and task.labels:
        out.append(TranslationExample(tensor, "instruction", sentences[0], task.name, sentences[1:]))
    return out


def training_examples(manifest, cfg: TranslatorConfig, split: str = "train", tasks=None) -> list[TranslationExample]:
    """Every example of the manifest's ``split`` tasks (or of ``tasks``; ``cfg.prompts`` picks checkpoints)."""
    tasks = manifest.split(split) if tasks is None else tasks
    out = []
    for task, entry, tensor in manifest.iter_prompts(tasks):
        if cfg.prompts == "best" and not entry.best:
            continue
        out += task_examples(task, entry, tensor, cfg)
    if not out:
        raise Soft2HardError(f"{manifest.root}: no {split} prompts to train a translator on")
    return out


def validation_split(tasks: list, n: int, seed: int) -> tuple[list, list]:
    """(training, validation) tasks: whole split groups, in seeded order and per kind in proportion, go to
    validation until it holds about ``n`` tasks; a group bigger than half the kind's share is never taken."""
    if n <= 0:
        return list(tasks), []
    chosen: set[str] = set()
    kinds = sorted({t.kind for t in tasks})
    for kind in kinds:
        of_kind = [t for t in tasks if t.kind == kind]
        want = max(1, round(n * len(of_kind) / len(tasks)))
        sizes: dict[str, int] = {}
        for t in of_kind:
            sizes[t.group] = sizes.get(t.group, 0) + 1
        groups = sorted(sizes)
        random.Random(f"translator-validation:{seed}:{kind}").shuffle(groups)
        count = 0
        for g in groups:
            if count >= want:
                break
            if sizes[g] <= max(1, want // 2) and len(sizes) > 1:
                chosen.add(g)
                count += sizes[g]
    train = [t for t in tasks if t.group not in chosen]
    if not train:
        raise Soft2HardError(f"--validation-tasks {n} leaves no training task; ask for fewer")
    return train, [t for t in tasks if t.group in chosen]


def subset_tasks(tasks: list, n: int, seed: int) -> list:
    """A seeded subset of ``n`` tasks (all when ``n`` is 0 or too large). Subsets of one seed are nested, so a
    learning curve over sizes adds tasks to the same set."""
    if n <= 0 or n >= len(tasks):
        return list(tasks)
    order = sorted(tasks, key=lambda t: t.name)
    random.Random(f"translator-subset:{seed}").shuffle(order)
    keep = {t.name for t in order[:n]}
    return [t for t in tasks if t.name in keep]


def task_family(name: str) -> str:
    """The family that balancing counts a task in: ``comp/<generator family>`` for compositional tasks,
    ``bigbench/<parent>`` for BIG-bench tasks (Natural-Instructions subtasks are one parent), else the source prefix
    (``gen``, ``cat``, ``user``, ...)."""
    parts = name.split("/")
    if parts[0] in ("comp", "bigbench") and len(parts) > 2:
        return "/".join(parts[:2])
    return parts[0] if parts[0] != "bigbench" else name


def in_family(family: str, spec: str) -> bool:
    """Whether ``family`` is the family ``spec`` names or one inside it (``bigbench`` holds ``bigbench/snarks``)."""
    return family == spec or family.startswith(spec + "/")


def cap_families(tasks: list, n: int, seed: int, kinds: str = "") -> list:
    """At most ``n`` tasks of each :func:`task_family` (a seeded choice; all when ``n`` is 0), counting only the
    tasks of ``kinds`` (comma-separated; empty: every kind), the others all kept. The bank's big generator
    families would otherwise set the style of every output; capping only the general ones keeps every label set."""
    if n <= 0:
        return list(tasks)
    capped = {k for k in kinds.split(",") if k} or {t.kind for t in tasks}
    by_family: dict[str, list] = {}
    for t in sorted(tasks, key=lambda t: t.name):
        if t.kind in capped:
            by_family.setdefault(task_family(t.name), []).append(t)
    keep = {t.name for t in tasks if t.kind not in capped}
    for family, members in by_family.items():
        random.Random(f"translator-cap:{seed}:{family}").shuffle(members)
        keep.update(t.name for t in members[:n])
    return [t for t in tasks if t.name in keep]


def repeat_examples(examples: list[TranslationExample], spec: str) -> list[TranslationExample]:
    """Each example of a family named in ``spec`` (see ``parse_repeat``; ``bigbench`` names every BIG-bench
    parent) repeated that many times, in place; the most specific name wins."""
    counts = parse_repeat(spec)
    if not counts:
        return examples
    families = {task_family(ex.task) for ex in examples}
    unknown = [name for name in counts if not any(in_family(f, name) for f in families)]
    if unknown:
        raise Soft2HardError(f"--repeat names families with no training example: {', '.join(sorted(unknown))}")

    def copies(task: str) -> int:
        names = [name for name in counts if in_family(task_family(task), name)]
        return counts[max(names, key=len)] if names else 1

    return [ex for ex in examples for _ in range(copies(ex.task))]


def family_counts(examples: list[TranslationExample]) -> dict[str, int]:
    """Training tasks per family (recorded with a translator, so its mix is visible)."""
    tasks = {ex.task for ex in examples}
    counts: dict[str, int] = {}
    for name in sorted(tasks):
        counts[task_family(name)] = counts.get(task_family(name), 0) + 1
    return counts


def prepare_examples(manifest, cfg: TranslatorConfig) -> tuple[list[TranslationExample], list[TranslationExample]]:
    """(training, validation) examples of a manifest's training tasks under ``cfg``: validation groups set aside,
    then the task subset, the per-family cap and the repeats (validation is never capped or repeated)."""
    train, validation = validation_split(manifest.split("train"), cfg.validation_tasks, cfg.seed)
    train = subset_tasks(train, cfg.max_train_tasks, cfg.seed)
    train = cap_families(train, cfg.max_tasks_per_family, cfg.seed, cfg.cap_kinds)
    examples = repeat_examples(training_examples(manifest, cfg, tasks=train), cfg.repeat)
    return examples, (training_examples(manifest, cfg, tasks=validation) if validation else [])


def batch_indices(n: int, step: int, cfg: TranslatorConfig) -> list[int]:
    """Epoch-wise shuffles seeded by (seed, epoch): step -> the examples of that batch."""
    per_epoch = math.ceil(n / cfg.batch_size)
    epoch, k = divmod(step, per_epoch)
    order = list(range(n))
    random.Random(f"{cfg.seed}:epoch{epoch}").shuffle(order)
    return order[k * cfg.batch_size:(k + 1) * cfg.batch_size]


@torch.no_grad()
def validation_loss(lm: LanguageModel, examples: list[TranslationExample], cfg: TranslatorConfig) -> float:
    """Mean target loss over every (example, text) pair (dropout off); batches weigh by their pair count."""
    pairs = [(ex, text) for ex in examples for text in ex.texts]
    total = 0.0
    for i in range(0, len(pairs), VALIDATION_BATCH):
        chunk = pairs[i:i + VALIDATION_BATCH]
        total += float(batch_loss(lm, [ex for ex, _ in chunk], cfg, [t for _, t in chunk])) * len(chunk)
    return total / len(pairs)


@torch.no_grad()
def validation_quality(lm: LanguageModel, examples: list[TranslationExample], max_new_tokens: int = 48) -> float:
    """Mean quality of greedy translations, one per (task, cue) (its first example): class rate of the label list
    for the ``labels`` cue, best ROUGE-L against the task's texts for the ``instruction`` cue."""
    from soft2hard.metrics import class_rate, rouge_l

    firsts: dict[tuple[str, str], TranslationExample] = {}
    for ex in examples:
        firsts.setdefault((ex.task, ex.cue), ex)
    scores: list[float] = []
    for cue in CUES:
        chosen = [ex for ex in firsts.values() if ex.cue == cue]
        if not chosen:
            continue
        texts = translate_batch(lm, [ex.prompt for ex in chosen], cue, max_new_tokens)
        for ex, text in zip(chosen, texts):
            if cue == "labels":
                scores.append(class_rate(text, [x.strip() for x in ex.reference.split(",")]))
            else:
                scores.append(max(rouge_l([text] * len(ex.texts), list(ex.texts))))
    return sum(scores) / len(scores)


def best_validation(history: list[dict], metric: str) -> dict | None:
    """The validation pass whose checkpoint is published: lowest loss, or highest quality (earliest on ties)."""
    if not history:
        return None
    if metric == "quality":
        return min(history, key=lambda v: (-v["quality"], v["step"]))
    return min(history, key=lambda v: (v["loss"], v["step"]))


def train_translator(lm: LanguageModel, examples: list[TranslationExample], cfg: TranslatorConfig, out: Path,
                     resume: bool = False, overwrite: bool = False, progress: bool = True,
                     extra_meta: dict | None = None, stop_after: int | None = None,
                     validation: list[TranslationExample] | None = None) -> Translator | None:
    """Fine-tune LoRA adapters on ``examples``; writes ``out`` (adapter + translator.json + checkpoints/).

    With ``validation`` examples the published adapter is the checkpoint of the best validation pass
    (:func:`best_validation` under ``cfg.validation_metric``).
    ``stop_after`` ends the run after that many steps (as an interruption would; returns None)."""
    out = Path(out)
    if not cfg.target_modules:  # record the layers actually adapted, so translator.json describes the adapter
        cfg = replace(cfg, target_modules=tuple(lm.lora_target_modules()))
    validation = validation or []
    settings = json.loads(json.dumps({"config": asdict(cfg), "model": lm.name, "n_examples": len(examples),
                                      "n_validation": len(validation)}))
    existing = runs.prepare(out, settings, "a translator run", "state.json", resume, overwrite,
                            result_name=TRANSLATOR_META, scratch=(STAGING,))

    peft_model = apply_lora(lm, cfg)
    params = [p for p in peft_model.parameters() if p.requires_grad]
    names = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    per_epoch = math.ceil(len(examples) / cfg.batch_size)
    total = cfg.epochs * per_epoch
    eval_every = cfg.eval_every or per_epoch
    state = {"step": 0, "losses": [], "train_seconds": 0.0, "validation": [], "stopped": False}
    if existing:
        state = {**state, **_load_checkpoint(existing[-1], peft_model, opt, names, params)}
        logger.info("resumed translator training from %s", existing[-1].name)

    peft_model.train()
    bar = tqdm(total=total, initial=state["step"], desc="translator", disable=not progress, dynamic_ncols=True)
    while state["step"] < total and not state["stopped"]:
        step, t0 = state["step"], time.time()
        set_lr(opt, warmup_cosine(step, total, cfg.lr, cfg.warmup_steps))
        torch.manual_seed(cfg.seed * 1_000_003 + step)  # dropout masks depend on the step only: exact resume
        index = batch_indices(len(examples), step, cfg)
        batch = [examples[i] for i in index]
        loss = batch_loss(lm, batch, cfg, [examples[i].target(step // per_epoch, i) for i in index])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        state["step"] = step + 1
        state["losses"].append(round(loss.item(), 5))
        state["train_seconds"] += time.time() - t0
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}")
        evaluate = bool(validation) and (state["step"] % eval_every == 0 or state["step"] == total)
        if evaluate:
            message = _validate(lm, peft_model, validation, cfg, state)
            bar.write(message) if progress else logger.info(message)
        if evaluate or state["step"] % cfg.save_every == 0 or state["step"] == total:
            _save_checkpoint(runs.checkpoint_dir(out, state["step"]), peft_model, opt, names, params, state, lm.name)
        if stop_after is not None and state["step"] >= stop_after:
            bar.close()
            return None
    bar.close()
    best = best_validation(state["validation"], cfg.validation_metric)
    if best is not None and best["step"] != state["step"]:
        _load_adapter_weights(peft_model, runs.checkpoint_dir(out, best["step"]) / "adapter")
    peft_model.eval()
    meta = {"config": asdict(cfg), "model": lm.name, "d_model": lm.d_model,
            "n_tokens_seen": sorted({ex.prompt.shape[0] for ex in examples}), "n_examples": len(examples),
            "steps": state["step"], "planned_steps": total, "train_seconds": round(state["train_seconds"], 1),
            "final_loss": state["losses"][-1], "cues": CUES, "training_tasks": sorted({ex.task for ex in examples}),
            "validation_tasks": sorted({ex.task for ex in validation}), "validation": state["validation"],
            "best_step": best["step"] if best else state["step"], "stopped_early": state["stopped"],
            **(extra_meta or {}), "provenance": provenance()}
    publish(out, lambda folder: _save_adapter(peft_model, folder, lm.name, dtype=torch.float16))
    atomic.write_json(out / "losses.json", state["losses"])
    atomic.write_json(out / TRANSLATOR_META, meta)  # last: marks a finished translator
    return Translator(lm=lm, meta=meta)


def _validate(lm, peft_model, validation, cfg, state) -> str:
    """One validation pass: appends to ``state["validation"]``, sets ``state["stopped"]``; returns a progress line."""
    peft_model.eval()
    entry = {"step": state["step"], "loss": round(validation_loss(lm, validation, cfg), 5)}
    if cfg.validation_metric == "quality":
        entry["quality"] = round(validation_quality(lm, validation), 5)
    peft_model.train()
    state["validation"].append(entry)
    best = best_validation(state["validation"], cfg.validation_metric)
    since = sum(1 for v in state["validation"] if v["step"] > best["step"])
    state["stopped"] = bool(cfg.patience) and since >= cfg.patience
    key = cfg.validation_metric
    return (f"step {state['step']}: validation {key} {entry[key]:.4f} (best {best[key]:.4f} at step {best['step']})"
            + (f"; no better for {since} passes, stopping early" if state["stopped"] else ""))


def _save_checkpoint(path: Path, peft_model, opt, names, params, state, model_name: str) -> None:
    with atomic.directory(path) as tmp:
        _save_adapter(peft_model, tmp / "adapter", model_name)
        moments = optimizer_tensors(opt, dict(zip(names, params)), step_key=STEP_KEY)
        if moments:
            atomic.save_tensors(tmp / "optimizer.safetensors", moments)
        atomic.write_json(tmp / "state.json", state)


def _load_checkpoint(path: Path, peft_model, opt, names, params) -> dict:
    _load_adapter_weights(peft_model, path / "adapter")
    state = json.loads((path / "state.json").read_text())
    if (path / "optimizer.safetensors").exists():
        tensors = load_file(str(path / "optimizer.safetensors"))
        load_optimizer_tensors(opt, dict(zip(names, params)), tensors, step_key=STEP_KEY)
    return state
