"""Prompt tuning: learn a soft prompt for a frozen causal LM (Lester et al. 2021).

The loop follows nanoGPT's order: lr from the schedule -> periodic no-grad eval + checkpoint -> forward/backward
-> clip -> step -> zero_grad. Batches are a pure function of (seed, step), so a resumed run replays exactly the
batches an uninterrupted run would have seen, and checkpoints (prompt + AdamW moments) make it bit-identical.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file
from tqdm.auto import tqdm

from soft2hard import atomic, runs
from soft2hard.distill import distill_loss, teacher_continuations, teacher_faithfulness
from soft2hard.errors import Soft2HardError
from soft2hard.lm import LanguageModel
from soft2hard.prompts import SoftPrompt
from soft2hard.provenance import provenance
from soft2hard.scoring import score
from soft2hard.tasks.base import Example, Task
from soft2hard.training import (
    STAGING,
    check_choice,
    check_ints,
    check_numbers,
    check_texts,
    load_optimizer_tensors,
    optimizer_tensors,
    publish,
    set_lr,
    warmup_cosine,
)

logger = logging.getLogger(__name__)

INITS = ("vocab", "random", "text")
OBJECTIVES = ("task", "distill")
DISTILL_TARGETS = ("task", "teacher")
CHECKPOINT_DIR = runs.CHECKPOINT_DIR
STATE_NAME = "trainer_state.json"
OPTIMIZER_NAME = "optimizer.safetensors"


@dataclass
class TuningConfig:
    # help: the field's documentation, also the CLI option's help (soft2hard.cli.common.ConfigOptions)
    n_tokens: int = field(default=20, metadata={"help": "number of virtual tokens"})
    steps: int = field(default=150, metadata={"help": "optimizer steps"})
    batch_size: int = field(default=8, metadata={"help": "training examples per step"})
    lr: float = field(default=3e-2, metadata={"help": "AdamW learning rate (prompt tuning wants a large one)"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    warmup_steps: int = field(default=10, metadata={"help": "linear warmup steps, then cosine decay to 10% of lr"})
    grad_clip: float = field(default=1.0, metadata={"help": "gradient norm clipping threshold"})
    init: str = field(default="vocab", metadata={
        "help": "prompt initialisation: vocab (sampled token embeddings) | random (Gaussian matched to the "
                "vocabulary) | text (the embeddings of the init text)"})
    init_text: str | None = field(default=None, metadata={"help": "text for --init text"})
    seed: int = field(default=0, metadata={"help": "seed of the initialisation, batches and the task's split"})
    eval_every: int = field(default=50, metadata={
        "help": "validate and checkpoint every N steps (and at the end)"})
    max_eval_examples: int = field(default=64, metadata={"help": "validation examples scored during training"})
    max_test_examples: int = field(default=200, metadata={"help": "test examples scored at the end"})
    max_train_examples: int | None = field(default=None, metadata={
        "help": "use at most N training examples (default: all)"})
    eval_batch_size: int = field(default=16, metadata={"help": "examples per scoring batch"})
    objective: str = field(default="task", metadata={
        "help": "task: learn the task's targets (cross-entropy) | distill: match the model given the teacher "
                "prompt (KL)"})
    teacher_prompt: str | None = field(default=None, metadata={
        "help": "the text that a distilled soft prompt replaces"})
    distill_targets: str = field(default="task", metadata={
        "help": "distillation is teacher-forced on the task's targets or on the teacher's own greedy "
                "continuations (no labels needed)"})
    distill_max_new_tokens: int = field(default=24, metadata={
        "help": "length of the teacher's continuations (distill targets 'teacher')"})
    patience: int | None = field(default=None, metadata={
        "help": "stop early after N validations in a row without a better score (default: never)"})


    def __post_init__(self) -> None:
        check_ints(self, "n_tokens", "steps", "batch_size", "eval_every", "max_eval_examples", "max_test_examples",
                   "eval_batch_size", "distill_max_new_tokens")
        check_ints(self, "patience", "max_train_examples", optional=True)
        check_ints(self, "warmup_steps", minimum=0)
        check_ints(self, "seed", minimum=None)
        check_numbers(self, "lr", "grad_clip")
        check_numbers(self, "weight_decay", positive=False)
        check_texts(self, "init_text", "teacher_prompt")
        check_choice(self, "init", INITS)
        check_choice(self, "objective", OBJECTIVES)
        check_choice(self, "distill_targets", DISTILL_TARGETS)
        if self.objective == "distill" and not (self.teacher_prompt or "").strip():
            raise Soft2HardError("objective 'distill' needs a teacher prompt (--teacher-prompt TEXT or @FILE)")
        if self.init == "text" and not self.init_text:
            raise Soft2HardError("init 'text' needs init_text (e.g. --init-text 'Give the plural')")


def stopped_early(state: dict, cfg: TuningConfig) -> bool:
    """Early stopping: none of the last ``patience`` validations beat (strictly) every score before it. A pure
    function of the stored state, so a resumed run stops where the uninterrupted one did."""
    if cfg.patience is None:
        return False
    best, since = float("-inf"), 0
    for v in state["validation"]:
        best, since = (v["score"], 0) if v["score"] > best else (best, since + 1)
    return since >= cfg.patience


def batch_for_step(train: tuple[Example, ...], step: int, cfg: TuningConfig) -> list[Example]:
    rng = random.Random(f"{cfg.seed}:{step}")
    k = min(cfg.batch_size, len(train))
    return [train[i] for i in rng.sample(range(len(train)), k)]


def training_target(task: Task, target: str) -> str:
    # generation targets end with the newline that the decoder stops at, so the prompt learns to stop
    text = task.format_target(target)
    return text if task.answer_type == "classification" else text + "\n"


def initial_prompt(lm: LanguageModel, cfg: TuningConfig) -> torch.Tensor:
    gen = torch.Generator().manual_seed(cfg.seed)
    vocab = lm.vocab_embeddings().float().cpu()  # (V, D), scaled space
    if cfg.init == "text":
        ids = lm.encode(cfg.init_text, special=False)
        if not ids:
            raise Soft2HardError(f"init_text {cfg.init_text!r} tokenizes to nothing")
        ids = (ids * math.ceil(cfg.n_tokens / len(ids)))[: cfg.n_tokens]
        return vocab[torch.tensor(ids)].clone()
    if cfg.init == "vocab":
        special = lm.special_ids
        pool = torch.tensor([i for i in range(min(5000, vocab.shape[0])) if i not in special])
        ids = pool[torch.randint(len(pool), (cfg.n_tokens,), generator=gen)]
        return vocab[ids].clone()
    std = vocab.std(dim=0)  # (D,)
    return torch.randn(cfg.n_tokens, vocab.shape[1], generator=gen) * std + vocab.mean(dim=0)


def batch_loss(lm: LanguageModel, prompt: torch.Tensor, task: Task, batch: list[Example]) -> torch.Tensor:
    """Mean cross-entropy over all target tokens of the batch."""
    return _task_loss(lm, prompt, task, batch)[0]


def _task_loss(lm: LanguageModel, prompt: torch.Tensor, task: Task, batch: list[Example]):
    total, count, mask = lm.target_logprobs(prompt, [task.format_input(ex.input) for ex in batch],
                                            [training_target(task, ex.target) for ex in batch], with_mask=True)
    return -total.sum() / count.sum(), mask, count.sum()


def training_loss(lm: LanguageModel, prompt: torch.Tensor, task: Task, batch: list[Example], cfg: TuningConfig,
                  teacher_targets: dict[str, str] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The loss of one training batch (``cfg.objective``) and the tokens it ran, soft prompt + context per row,
    counted on the batch's mask (context + target tokens) less its target tokens. Both stay on the device."""
    if cfg.objective == "distill":
        loss, mask, n_targets = distill_loss(lm, prompt, cfg.teacher_prompt, task, batch,
                                             forced_targets(task, batch, teacher_targets), with_mask=True)
    else:
        loss, mask, n_targets = _task_loss(lm, prompt, task, batch)
    return loss, mask.sum() - n_targets + cfg.n_tokens * len(batch)


def validation_score(lm: LanguageModel, prompt: torch.Tensor, task: Task, val, cfg: TuningConfig,
                     teacher_targets: dict[str, str] | None = None) -> float:
    """Higher is better: the task score, or for distillation minus the mean KL to the teacher."""
    if cfg.objective != "distill":
        return score(lm, prompt, task, val, cfg.eval_batch_size)
    with torch.no_grad():
        targets = forced_targets(task, val, teacher_targets)
        return -float(distill_loss(lm, prompt, cfg.teacher_prompt, task, list(val), targets))


def forced_targets(task: Task, batch, teacher_targets: dict[str, str] | None) -> list[str]:
    """What a distillation batch is teacher-forced on: the teacher's own continuations, or the task targets."""
    if teacher_targets is not None:
        return [teacher_targets[ex.input] for ex in batch]
    return [training_target(task, ex.target) for ex in batch]


@dataclass
class TuningResult:
    prompt: SoftPrompt
    metrics: dict


@dataclass(eq=False)
class TuningRun:
    """A run set up to train: its data, the prompt and AdamW it trains, and the state its checkpoints store.
    :func:`tune` trains one; a pack (:mod:`soft2hard.packs`) trains several in shared passes."""

    task: Task
    cfg: TuningConfig
    out: Path
    train: tuple[Example, ...]
    val: tuple[Example, ...]
    test: tuple[Example, ...]
    prompt: torch.nn.Parameter  # (n, D) fp32 master copy
    opt: torch.optim.Optimizer
    state: dict
    meta: dict  # the saved prompts' metadata

    @property
    def done(self) -> bool:
        return self.state["step"] >= self.cfg.steps or stopped_early(self.state, self.cfg)


def start_run(lm: LanguageModel, task: Task, cfg: TuningConfig, out: Path, resume: bool = False,
              overwrite: bool = False, from_step: int | None = None) -> TuningRun:
    """Check and set up the run folder ``out`` (:func:`runs.prepare`) and the prompt and optimizer, restored from
    the newest checkpoint when resuming; ``from_step``: from that step's checkpoint only (none, e.g. 0: afresh)."""
    out = Path(out)
    splits = task.splits(seed=cfg.seed, max_examples=cfg.max_train_examples)
    existing = runs.prepare(out, runs.settings(lm.name, task.name, cfg), "a tuning run", STATE_NAME, resume,
                            overwrite, scratch=(STAGING,))
    prompt = torch.nn.Parameter(initial_prompt(lm, cfg).to(lm.device))  # (n, D) fp32 master copy
    opt = torch.optim.AdamW([prompt], lr=cfg.lr, weight_decay=cfg.weight_decay)
    assert lm.trainable_parameters() == [], "the model must stay frozen"
    state = {"step": 0, "losses": [], "validation": [], "best_validation": None, "best_step": None,
             "train_seconds": 0.0, "tokens": 0}
    if from_step is not None:
        existing = [c for c in existing if c.name == runs.checkpoint_dir(out, from_step).name]
    if existing:
        state = load_checkpoint(existing[-1], prompt, opt)
        logger.info("resumed %s from %s (step %d)", out, existing[-1].name, state["step"])
    meta = {"task": task.name, "answer_type": task.answer_type, "seed": cfg.seed, "n_tokens": cfg.n_tokens,
            "init": cfg.init}
    return TuningRun(task, cfg, out, splits.train, splits.validation[: cfg.max_eval_examples],
                     splits.test[: cfg.max_test_examples], prompt, opt, state, meta)


def save_checkpoint(run: TuningRun, model_name: str) -> None:
    """The run at its current step: prompt, AdamW moments and state (written last: it marks a complete one)."""
    step = run.state["step"]
    with atomic.directory(runs.checkpoint_dir(run.out, step)) as tmp:
        SoftPrompt(run.prompt.detach().cpu().clone(), model_name, {**run.meta, "step": step}).save(tmp / "prompt")
        moments = optimizer_tensors(run.opt, {"": run.prompt})  # none before the first step
        if moments:
            atomic.save_tensors(tmp / OPTIMIZER_NAME, moments)
        atomic.write_json(tmp / STATE_NAME, run.state)


def load_checkpoint(ckpt: Path, prompt: torch.nn.Parameter, opt: torch.optim.Optimizer) -> dict:
    state = json.loads((ckpt / STATE_NAME).read_text())
    loaded = SoftPrompt.load(ckpt / "prompt")
    with torch.no_grad():
        prompt.copy_(loaded.tensor.to(prompt.device))
    if (ckpt / OPTIMIZER_NAME).exists():
        load_optimizer_tensors(opt, {"": prompt}, load_file(str(ckpt / OPTIMIZER_NAME)))
    return state


def tune(lm: LanguageModel, task: Task, cfg: TuningConfig, out: Path, resume: bool = False,
         overwrite: bool = False, progress: bool = True) -> TuningResult:
    """Train a soft prompt and write ``out`` (PEFT adapter + metrics.json + checkpoints/).

    Args:
        resume: continue from the newest complete checkpoint in ``out`` (also after kill -9).
        overwrite: delete a previous run in ``out`` and start over.
    """
    torch.manual_seed(cfg.seed)
    run = start_run(lm, task, cfg, out, resume, overwrite)
    prompt, opt, state, val, test = run.prompt, run.opt, run.state, run.val, run.test
    if "baseline_score" not in state:
        state["baseline_score"] = score(lm, None, task, test, cfg.eval_batch_size)
        state["baseline_validation"] = score(lm, None, task, val, cfg.eval_batch_size)
    teacher_targets = None
    if cfg.objective == "distill" and cfg.distill_targets == "teacher":
        # only for the inputs this run uses (validation, then training inputs in order of first use: the cost does
        # not grow with the dataset), computed once in a fixed order so that a resumed run sees the same targets
        used = list(val) + [ex for s in range(cfg.steps) for ex in batch_for_step(run.train, s, cfg)]
        teacher_targets = teacher_continuations(lm, cfg.teacher_prompt, task, used, cfg.distill_max_new_tokens,
                                                cfg.eval_batch_size)

    bar = tqdm(total=cfg.steps, initial=state["step"], desc=f"tune {task.name}", disable=not progress,
               dynamic_ncols=True)
    while not run.done:
        t0, step = time.time(), state["step"]
        set_lr(opt, warmup_cosine(step, cfg.steps, cfg.lr, cfg.warmup_steps))
        loss, tokens = training_loss(lm, prompt, task, batch_for_step(run.train, step, cfg), cfg, teacher_targets)
        loss.backward()
        loss_value = loss.item()
        torch.nn.utils.clip_grad_norm_([prompt], cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        state["losses"].append(round(loss_value, 5))
        state["train_seconds"] += time.time() - t0
        state["tokens"] += int(tokens)
        state["step"] = step
        bar.update(1)
        bar.set_postfix(loss=f"{loss_value:.3f}")
        if step % cfg.eval_every == 0 or step == cfg.steps:
            val_score = validation_score(lm, prompt.detach(), task, val, cfg, teacher_targets)
            state["validation"].append({"step": step, "score": val_score, "loss": loss_value})
            if state["best_validation"] is None or val_score >= state["best_validation"]:
                state["best_validation"], state["best_step"] = val_score, step
            line = f"step {step}: loss {loss_value:.4f}  validation {val_score:.3f}"
            bar.write(line) if progress else logger.info(line)
            save_checkpoint(run, lm.name)
    bar.close()

    best = SoftPrompt.load(runs.checkpoint_dir(run.out, state["best_step"]) / "prompt").tensor
    test_score = score(lm, best.to(lm.device), task, test, cfg.eval_batch_size)
    return finish_run(lm, run, best, test_score)


def finish_run(lm: LanguageModel, run: TuningRun, best: torch.Tensor, test_score: float) -> TuningResult:
    """Write a finished run's PEFT adapter and ``metrics.json`` (last: its presence marks a finished run)."""
    task, cfg, state, meta, test = run.task, run.cfg, run.state, run.meta, run.test
    metrics = {
        "model": lm.name, "task": task.name, "answer_type": task.answer_type, "seed": cfg.seed, "n_tokens": cfg.n_tokens,
        "steps": cfg.steps, "best_step": state["best_step"], "baseline_score": state["baseline_score"],
        "baseline_validation_score": state["baseline_validation"], "validation_score": state["best_validation"],
        "test_score": test_score, "n_train": len(run.train), "n_validation": len(run.val), "n_test": len(test),
        "train_seconds": round(state["train_seconds"], 2),
        "tokens_per_second": round(state["tokens"] / max(state["train_seconds"], 1e-9), 1),
        "losses": state["losses"], "validation": state["validation"],
        "metric": "accuracy" if task.answer_type == "classification" else "exact_match",
        "provenance": provenance(),  # a record only: never compared on resume
    }
    if state["step"] < cfg.steps:
        metrics["stopped_at_step"] = state["step"]  # early stopping (patience)
    if cfg.objective == "distill":
        metrics["objective"] = "distill"
        metrics["validation_metric"] = "negative mean KL to the teacher"
        metrics["teacher_prompt"] = cfg.teacher_prompt
        metrics["faithfulness"] = teacher_faithfulness(lm, best.to(lm.device), cfg.teacher_prompt, task, test, cfg.eval_batch_size)
        metrics["faithfulness_no_prompt"] = teacher_faithfulness(lm, None, cfg.teacher_prompt, task, test, cfg.eval_batch_size)
        meta["teacher_prompt"] = cfg.teacher_prompt
    final = SoftPrompt(best.cpu(), lm.name, {**meta, "step": state["best_step"], "test_score": test_score,
                                              "baseline_score": state["baseline_score"]})
    # the adapter files sit at the top of the run directory (PEFT reads them from there)
    publish(run.out, lambda folder: final.save(folder, num_layers=getattr(lm.config, "num_hidden_layers", None),
                                               num_heads=getattr(lm.config, "num_attention_heads", None)))
    atomic.write_json(run.out / "metrics.json", metrics)
    return TuningResult(prompt=final, metrics=metrics)
