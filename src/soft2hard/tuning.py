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
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file
from tqdm.auto import tqdm

from soft2hard import atomic, runs
from soft2hard.distill import distill_loss, fidelity, teacher_continuations
from soft2hard.errors import Soft2HardError
from soft2hard.lm import LanguageModel
from soft2hard.prompts import SoftPrompt
from soft2hard.scoring import score
from soft2hard.tasks.base import Example, Task

logger = logging.getLogger(__name__)

INITS = ("vocab", "random", "text")
OBJECTIVES = ("task", "distill")
DISTILL_TARGETS = ("task", "teacher")
CHECKPOINT_DIR = runs.CHECKPOINT_DIR
STATE_NAME = "trainer_state.json"
OPTIMIZER_NAME = "optimizer.safetensors"


@dataclass
class TuningConfig:
    n_tokens: int = 20  # virtual tokens in the soft prompt
    steps: int = 150  # optimizer steps
    batch_size: int = 8
    lr: float = 3e-2  # AdamW; prompt tuning wants a large lr
    weight_decay: float = 0.0
    warmup_steps: int = 10  # linear warmup, then cosine decay to 10% of lr
    grad_clip: float = 1.0
    init: str = "vocab"  # vocab: sampled token embeddings | random: Gaussian matched to the vocab | text
    init_text: str | None = None
    seed: int = 0
    eval_every: int = 50  # validate + checkpoint every this many steps (and at the end)
    max_eval_examples: int = 64  # validation subset used during training
    max_test_examples: int = 200
    max_train_examples: int | None = None
    eval_batch_size: int = 16
    objective: str = "task"  # task: cross-entropy on targets | distill: KL to the model given teacher_prompt
    teacher_prompt: str | None = None  # the text that a distilled soft prompt replaces
    distill_targets: str = "task"  # task: teacher-forced on task targets | teacher: on the teacher's own greedy output
    distill_max_new_tokens: int = 24  # length of the teacher's continuations (distill_targets="teacher")
    patience: int | None = None  # stop once this many validations in a row did not beat the best one


    def __post_init__(self) -> None:
        for name in ("n_tokens", "steps", "batch_size", "eval_every", "max_eval_examples", "max_test_examples",
                     "eval_batch_size", "distill_max_new_tokens"):
            value = getattr(self, name)
            if not is_int(value) or value < 1:
                raise Soft2HardError(f"{name} must be a positive integer, got {value!r}")
        if self.patience is not None and not (is_int(self.patience) and self.patience > 0):
            raise Soft2HardError(f"patience must be a positive integer, got {self.patience!r}")
        if self.max_train_examples is not None and not (is_int(self.max_train_examples) and self.max_train_examples > 0):
            raise Soft2HardError(f"max_train_examples must be a positive integer, got {self.max_train_examples!r}")
        if not is_int(self.warmup_steps) or self.warmup_steps < 0:
            raise Soft2HardError(f"warmup_steps must be a non-negative integer, got {self.warmup_steps!r}")
        if not is_int(self.seed):
            raise Soft2HardError(f"seed must be an integer, got {self.seed!r}")
        for name in ("lr", "grad_clip"):
            value = getattr(self, name)
            if not is_number(value) or value <= 0:
                raise Soft2HardError(f"{name} must be a positive number, got {value!r}")
        if not is_number(self.weight_decay) or self.weight_decay < 0:
            raise Soft2HardError(f"weight_decay must be a non-negative number, got {self.weight_decay!r}")
        for name in ("init_text", "teacher_prompt"):
            if not isinstance(getattr(self, name), str | None):
                raise Soft2HardError(f"{name} must be text, got {getattr(self, name)!r}")
        if self.init not in INITS:
            raise Soft2HardError(f"init must be one of {', '.join(INITS)}, got {self.init!r}")
        if self.objective not in OBJECTIVES:
            raise Soft2HardError(f"objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
        if self.distill_targets not in DISTILL_TARGETS:
            raise Soft2HardError(f"distill_targets must be one of {', '.join(DISTILL_TARGETS)}, "
                                 f"got {self.distill_targets!r}")
        if self.objective == "distill" and not (self.teacher_prompt or "").strip():
            raise Soft2HardError("objective 'distill' needs a teacher prompt (--teacher-prompt TEXT or @FILE)")
        if self.init == "text" and not self.init_text:
            raise Soft2HardError("init 'text' needs init_text (e.g. --init-text 'Give the plural')")


def is_int(value) -> bool:
    """An integer that is not a bool (JSON ``true`` must not pass for 1)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    """A finite int or float that is not a bool (and not an integer beyond the float range)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def lr_at(step: int, cfg: TuningConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


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
    return text if task.kind == "classification" else text + "\n"


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
        special = set(lm.tokenizer.all_special_ids)
        pool = torch.tensor([i for i in range(min(5000, vocab.shape[0])) if i not in special])
        ids = pool[torch.randint(len(pool), (cfg.n_tokens,), generator=gen)]
        return vocab[ids].clone()
    std = vocab.std(dim=0)  # (D,)
    return torch.randn(cfg.n_tokens, vocab.shape[1], generator=gen) * std + vocab.mean(dim=0)


def batch_loss(lm: LanguageModel, prompt: torch.Tensor, task: Task, batch: list[Example]) -> torch.Tensor:
    """Mean cross-entropy over all target tokens of the batch."""
    total, count = lm.target_logprobs(prompt, [task.format_input(ex.input) for ex in batch],
                                      [training_target(task, ex.target) for ex in batch])
    return -total.sum() / count.sum()


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


def save_checkpoint(out: Path, step: int, prompt: torch.Tensor, opt: torch.optim.Optimizer, state: dict,
                     model_name: str, meta: dict) -> None:
    target = runs.checkpoint_dir(out, step)
    with atomic.directory(target) as tmp:
        SoftPrompt(prompt.detach().cpu().clone(), model_name, {**meta, "step": step}).save(tmp / "prompt")
        st = opt.state[opt.param_groups[0]["params"][0]]
        if st:
            atomic.save_tensors(tmp / OPTIMIZER_NAME, {"exp_avg": st["exp_avg"], "exp_avg_sq": st["exp_avg_sq"],
                                                       "step": torch.as_tensor(st["step"]).float().reshape(1)})
        atomic.write_json(tmp / STATE_NAME, state)


def load_checkpoint(ckpt: Path, prompt: torch.nn.Parameter, opt: torch.optim.Optimizer) -> dict:
    state = json.loads((ckpt / STATE_NAME).read_text())
    loaded = SoftPrompt.load(ckpt / "prompt")
    with torch.no_grad():
        prompt.copy_(loaded.tensor.to(prompt.device))
    if (ckpt / OPTIMIZER_NAME).exists():
        t = load_file(str(ckpt / OPTIMIZER_NAME))
        opt.state[prompt] = {"exp_avg": t["exp_avg"].to(prompt.device), "exp_avg_sq": t["exp_avg_sq"].to(prompt.device),
                             "step": torch.tensor(float(t["step"][0]))}
    return state


def tune(lm: LanguageModel, task: Task, cfg: TuningConfig, out: Path, resume: bool = False,
         overwrite: bool = False, progress: bool = True) -> TuningResult:
    """Train a soft prompt and write ``out`` (PEFT adapter + metrics.json + checkpoints/).

    Args:
        resume: continue from the newest complete checkpoint in ``out`` (also after kill -9).
        overwrite: delete a previous run in ``out`` and start over.
    """
    out = Path(out)
    splits = task.splits(seed=cfg.seed, max_examples=cfg.max_train_examples)
    val = splits.validation[: cfg.max_eval_examples]
    test = splits.test[: cfg.max_test_examples]
    resolved = runs.settings(lm.name, task.name, cfg)
    existing = runs.prepare(out, resolved, "a tuning run", STATE_NAME, resume, overwrite, scratch=(".final",))

    torch.manual_seed(cfg.seed)
    prompt = torch.nn.Parameter(initial_prompt(lm, cfg).to(lm.device))  # (n, D) fp32 master copy
    opt = torch.optim.AdamW([prompt], lr=cfg.lr, weight_decay=cfg.weight_decay)
    assert [p for p in lm.model.parameters() if p.requires_grad] == [], "the model must stay frozen"

    state = {"step": 0, "losses": [], "validation": [], "best_validation": None, "best_step": None,
             "train_seconds": 0.0, "tokens": 0}
    if existing:
        state = load_checkpoint(existing[-1], prompt, opt)
        logger.info("resumed from %s (step %d)", existing[-1].name, state["step"])
    if "baseline_score" not in state:
        state["baseline_score"] = score(lm, None, task, test, cfg.eval_batch_size)
        state["baseline_validation"] = score(lm, None, task, val, cfg.eval_batch_size)
    meta = {"task": task.name, "seed": cfg.seed, "n_tokens": cfg.n_tokens, "init": cfg.init}
    teacher_targets = None
    if cfg.objective == "distill" and cfg.distill_targets == "teacher":
        # only for the inputs this run uses (validation, then training inputs in order of first use: the cost does
        # not grow with the dataset), computed once in a fixed order so that a resumed run sees the same targets
        used = list(val) + [ex for s in range(cfg.steps) for ex in batch_for_step(splits.train, s, cfg)]
        teacher_targets = teacher_continuations(lm, cfg.teacher_prompt, task, used, cfg.distill_max_new_tokens,
                                                cfg.eval_batch_size)

    bar = tqdm(total=cfg.steps, initial=state["step"], desc=f"tune {task.name}", disable=not progress,
               dynamic_ncols=True)
    step = state["step"]
    while step < cfg.steps and not stopped_early(state, cfg):
        t0 = time.time()
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        batch = batch_for_step(splits.train, step, cfg)
        if cfg.objective == "distill":
            loss = distill_loss(lm, prompt, cfg.teacher_prompt, task, batch,
                                forced_targets(task, batch, teacher_targets))
        else:
            loss = batch_loss(lm, prompt, task, batch)
        loss.backward()
        loss_value = loss.item()
        torch.nn.utils.clip_grad_norm_([prompt], cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        state["losses"].append(round(loss_value, 5))
        state["train_seconds"] += time.time() - t0
        state["tokens"] += sum(len(lm.encode(task.format_input(ex.input))) + cfg.n_tokens for ex in batch)
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
            save_checkpoint(out, step, prompt, opt, state, lm.name, meta)
    bar.close()

    best = SoftPrompt.load(runs.checkpoint_dir(out, state["best_step"]) / "prompt").tensor
    test_score = score(lm, best.to(lm.device), task, test, cfg.eval_batch_size)
    return finish_run(lm, task, cfg, out, state, best, test_score, meta, len(splits.train), len(val), test)


def finish_run(lm: LanguageModel, task: Task, cfg: TuningConfig, out: Path, state: dict, best: torch.Tensor,
               test_score: float, meta: dict, n_train: int, n_val: int, test) -> TuningResult:
    """Write a finished run's PEFT adapter and ``metrics.json`` (last: its presence marks a finished run)."""
    metrics = {
        "model": lm.name, "task": task.name, "kind": task.kind, "seed": cfg.seed, "n_tokens": cfg.n_tokens,
        "steps": cfg.steps, "best_step": state["best_step"], "baseline_score": state["baseline_score"],
        "baseline_validation_score": state["baseline_validation"], "validation_score": state["best_validation"],
        "test_score": test_score, "n_train": n_train, "n_validation": n_val, "n_test": len(test),
        "train_seconds": round(state["train_seconds"], 2),
        "tokens_per_second": round(state["tokens"] / max(state["train_seconds"], 1e-9), 1),
        "losses": state["losses"], "validation": state["validation"],
        "metric": "accuracy" if task.kind == "classification" else "exact_match",
    }
    if state["step"] < cfg.steps:
        metrics["stopped_at_step"] = state["step"]  # early stopping (patience)
    if cfg.objective == "distill":
        metrics["objective"] = "distill"
        metrics["validation_metric"] = "negative mean KL to the teacher"
        metrics["teacher_prompt"] = cfg.teacher_prompt
        metrics["fidelity"] = fidelity(lm, best.to(lm.device), cfg.teacher_prompt, task, test, cfg.eval_batch_size)
        metrics["fidelity_no_prompt"] = fidelity(lm, None, cfg.teacher_prompt, task, test, cfg.eval_batch_size)
        meta["teacher_prompt"] = cfg.teacher_prompt
    final = SoftPrompt(best.cpu(), lm.name, {**meta, "step": state["best_step"], "test_score": test_score,
                                              "baseline_score": state["baseline_score"]})
    _write_final(out, final, lm)
    atomic.write_json(out / "metrics.json", metrics)
    return TuningResult(prompt=final, metrics=metrics)


def _write_final(out: Path, prompt: SoftPrompt, lm: LanguageModel) -> None:
    # the adapter files sit at the top of the run directory (PEFT reads them from there); each is atomic
    staging = out / ".final"
    prompt.save(staging, num_layers=getattr(lm.config, "num_hidden_layers", None),
                num_heads=getattr(lm.config, "num_attention_heads", None))
    for f in sorted(staging.iterdir()):
        f.replace(out / f.name)
    shutil.rmtree(staging, ignore_errors=True)
