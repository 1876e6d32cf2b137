"""RLPrompt (Deng et al. 2022): learn a discrete k-token prompt for a classification task by reinforcement learning.

The policy is the frozen LM with a small trainable MLP applied residually to its last hidden state, so it starts
as the LM itself (the MLP's last layer is zero) and only learns a correction. It emits k tokens from BOS; each
sampled prompt is scored on a batch of task examples (gap between the gold label's probability and the best
other label's, scaled up when correct), optionally minus ``lambda * log-perplexity`` of the prompt (the
interpretability variant of METHODS.md section 6), z-scored across the prompts of the step and multiplied by
``reward_scale``. Learning is soft Q-learning with a Polyak-averaged target network, in one of two forms: the
policy logits are Q-values regressed onto ``logsumexp`` of the target's Q at the next state and onto the reward
at the last token (``sql_loss="single_step"``), or the official RLPrompt path-consistency losses on
log-probabilities (``"path"``, see :func:`path_loss`).

Like ``tuning.py``, everything random in step s is a pure function of (seed, s) (the task batch and a
``torch.Generator`` for sampling), and checkpoints hold the MLP, its target copy and Adam's state, so a resumed
run is bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from tqdm.auto import tqdm

from soft2hard import atomic, runs
from soft2hard.errors import Soft2HardError
from soft2hard.faithfulness import label_distributions, log_perplexity, scrutability
from soft2hard.lm import LanguageModel
from soft2hard.optimize.base import OptimizedPrompt
from soft2hard.scoring import score
from soft2hard.tasks.base import Example, Task
from soft2hard.training import (
    check_choice,
    check_ints,
    check_numbers,
    is_number,
    load_optimizer_tensors,
    optimizer_tensors,
)
from soft2hard.tuning import batch_for_step  # batches: a pure function of (seed, step)

STATE_NAME = "state.json"
SQL_LOSSES = ("single_step", "path")
TENSORS_NAME = "policy.safetensors"


@dataclass
class RLPromptConfig:
    n_tokens: int = 5  # k prompt tokens
    steps: int = 1000
    samples_per_step: int = 8  # prompts sampled per step (the z-score needs >= 2)
    batch_size: int = 16  # task examples each prompt is scored on per step
    lr: float = 1e-4  # Adam on the MLP only
    mlp_hidden: int = 256
    target_update: float = 0.01  # Polyak tau: target <- (1 - tau) * target + tau * online
    correct_coef: float = 2.0
    incorrect_coef: float = 1.8
    weight: float = 0.0  # lambda: reward -= lambda * log-perplexity of the prompt
    reward_scale: float = 1.0  # z-scored rewards are multiplied by this (official RLPrompt shaping: 5)
    sql_loss: str = "single_step"  # single_step: Q -> target; path: official RLPrompt default (see path_loss)
    top_k: int | None = None  # sample only among the LM's top-k next tokens (another interpretability knob)
    eval_every: int = 50  # validate the greedy prompt + checkpoint every this many steps (and at the end)
    seed: int = 0
    max_eval_examples: int = 64
    max_test_examples: int = 200
    max_train_examples: int | None = None
    eval_batch_size: int = 16

    def __post_init__(self) -> None:
        check_ints(self, "n_tokens", "steps", "samples_per_step", "batch_size", "mlp_hidden", "eval_every",
                   "max_eval_examples", "max_test_examples", "eval_batch_size")
        if self.samples_per_step < 2:
            raise Soft2HardError(f"samples_per_step must be >= 2 (rewards are z-scored across them), "
                                 f"got {self.samples_per_step}")
        check_ints(self, "max_train_examples", "top_k", optional=True)
        check_ints(self, "seed", minimum=None)
        check_numbers(self, "lr", "correct_coef", "incorrect_coef", "reward_scale")
        if not (is_number(self.target_update) and 0 < self.target_update <= 1):
            raise Soft2HardError(f"target_update (Polyak tau) must be in (0, 1], got {self.target_update!r}")
        check_numbers(self, "weight", positive=False)
        check_choice(self, "sql_loss", SQL_LOSSES)


# ---------------------------------------------------------------------------------------------- rewards
def classification_reward(label_probs: torch.Tensor, gold_index: torch.Tensor, correct_coef: float,
                          incorrect_coef: float) -> torch.Tensor:
    """Mean over examples of ``gap * coef``: gap = p(gold) - max p(other) on (N, L) probabilities; the
    correct coefficient applies when gap > 0. A scalar tensor."""
    gold = label_probs.gather(1, gold_index[:, None]).squeeze(1)
    others = label_probs.scatter(1, gold_index[:, None], float("-inf")).max(1).values
    gap = gold - others
    return torch.where(gap > 0, gap * correct_coef, gap * incorrect_coef).mean()


def zscore(rewards: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Standardise rewards across the prompts of one step; equal rewards give zeros, not NaN."""
    return (rewards - rewards.mean()) / (rewards.std(unbiased=False) + eps)


@torch.no_grad()
def prompt_rewards(lm: LanguageModel, task: Task, ids: torch.Tensor, examples: list[Example],
                   cfg: RLPromptConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(reward (S,), log-perplexity (S,)) for S prompts; reward = task reward - lambda * log-perplexity."""
    labels = list(task.labels)
    gold = torch.tensor([labels.index(ex.target) for ex in examples])
    task_r = torch.stack([
        classification_reward(label_distributions(lm, task, examples, prompt=lm.embed(row),
                                                  batch_size=cfg.eval_batch_size),
                              gold, cfg.correct_coef, cfg.incorrect_coef)
        for row in ids])
    log_ppl = log_perplexity(lm, ids)
    return task_r - cfg.weight * log_ppl, log_ppl


# ---------------------------------------------------------------------------------------------- policy
def make_mlp(d_model: int, hidden: int, seed: int) -> torch.nn.Sequential:
    """The trainable residual MLP; its output layer starts at zero so the initial policy equals the LM."""
    mlp = torch.nn.Sequential(torch.nn.Linear(d_model, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, d_model))
    gen = torch.Generator().manual_seed(seed)  # PyTorch's default Linear init, from a private seeded generator
    bound = 1 / math.sqrt(d_model)
    torch.nn.init.uniform_(mlp[0].weight, -bound, bound, generator=gen)
    torch.nn.init.uniform_(mlp[0].bias, -bound, bound, generator=gen)
    torch.nn.init.zeros_(mlp[2].weight)
    torch.nn.init.zeros_(mlp[2].bias)
    return mlp


def policy_logits(lm: LanguageModel, mlp: torch.nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """Q-values = LM head(h + MLP(h)) on fp32 hidden states (..., D) -> (..., V)."""
    x = hidden + mlp(hidden)
    return lm.logits_from_hidden(x.to(lm.weight_dtype))


def action_mask(lm: LanguageModel, lm_logits: torch.Tensor, top_k: int | None) -> torch.Tensor:
    """Allowed next tokens (..., V): no special or out-of-tokenizer ids (they do not round-trip as text);
    with ``top_k``, only the LM's k most likely of those."""
    allowed = torch.ones_like(lm_logits, dtype=torch.bool)
    allowed[..., len(lm.tokenizer):] = False
    allowed[..., sorted(lm.special_ids)] = False
    if top_k is not None:
        masked = lm_logits.masked_fill(~allowed, float("-inf"))
        top = masked.topk(min(top_k, int(allowed[(0,) * (allowed.ndim - 1)].sum())), dim=-1).indices
        allowed = torch.zeros_like(allowed).scatter(-1, top, True)
    return allowed


@torch.no_grad()
def sample_prompts(lm: LanguageModel, mlp: torch.nn.Module, n: int, k: int, generator: torch.Generator | None,
                   top_k: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Emit n prompts of k tokens from BOS (sampled with ``generator`` on CPU, greedy when it is None).

    Returns (ids (n, k) on CPU, hidden states (n, k, D) fp32 of the states s_0..s_{k-1}): the LM is frozen, so
    the training step recomputes Q from these without another LM pass.
    """
    ids = torch.full((n, 1), lm.bos_id, dtype=torch.long, device=lm.device)
    mask = torch.ones_like(ids)
    out = lm.forward_embeds(lm.embed(ids), mask, use_cache=True)
    hiddens, actions = [], []
    for t in range(k):
        h = out.last_hidden_state[:, -1].float()
        q = policy_logits(lm, mlp, h).masked_fill(~action_mask(lm, lm.logits_from_hidden(h), top_k), float("-inf"))
        if generator is None:
            a = q.argmax(-1)
        else:  # sampling on CPU: the same draws on any device
            a = torch.multinomial(q.softmax(-1).cpu(), 1, generator=generator).squeeze(1).to(lm.device)
        hiddens.append(h)
        actions.append(a)
        if t < k - 1:
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
            out = lm.extend(a[:, None], mask, lm.cache_of(out))
    return torch.stack(actions, 1).cpu(), torch.stack(hiddens, 1)


def soft_q_loss(q: torch.Tensor, actions: torch.Tensor, target_q: torch.Tensor, rewards: torch.Tensor
                ) -> torch.Tensor:
    """Mean squared soft-Q error: Q(s_t, a_t) -> logsumexp target-Q(s_{t+1}) for t < k-1, -> reward at k-1.

    q, target_q: (S, k, V) (target_q with disallowed actions at -inf); actions (S, k); rewards (S,).
    """
    q_taken = q.gather(2, actions[:, :, None].to(q.device)).squeeze(2)  # (S, k)
    with torch.no_grad():
        y = torch.cat([target_q[:, 1:].logsumexp(-1), rewards[:, None].to(q.device, q.dtype)], 1)
    return F.mse_loss(q_taken, y)


def path_loss(q: torch.Tensor, actions: torch.Tensor, target_q: torch.Tensor, rewards: torch.Tensor) -> torch.Tensor:
    """The official RLPrompt loss ("v2_v2r_v3_v3r" without the reversed terms): the mean of a single-step and a
    multi-step path-consistency error on advantages A = Q - V = log pi, summed over steps, averaged over prompts.

    Single-step: A_t -> V'(s_{t+1}) - V'(s_t), and r - V'(s_{k-1}) at the last token (V' = logsumexp target-Q).
    Multi-step: sum_{j>=t} A_j -> r - V'(s_t). Regressing log-probabilities instead of raw Q-values means the
    policy is not first pulled to the reward's scale, which the single-step loss spends its early steps on.
    q and target_q: (S, k, V) with disallowed actions at -inf; actions (S, k); rewards (S,).
    """
    v = q.logsumexp(-1)
    advantage = q.gather(2, actions[:, :, None].to(q.device)).squeeze(2) - v  # (S, k)
    with torch.no_grad():
        v_target = target_q.logsumexp(-1)
        r = rewards[:, None].to(q.device, q.dtype)
        single_target = torch.cat([v_target[:, 1:] - v_target[:, :-1], r - v_target[:, -1:]], 1)
        multi_target = r - v_target
    future = advantage.flip(1).cumsum(1).flip(1)  # sum_{j >= t} A_j
    per_token = ((advantage - single_target) ** 2 + (future - multi_target) ** 2) / 2
    return per_token.sum(1).mean()


@torch.no_grad()
def polyak_update(target: torch.nn.Module, online: torch.nn.Module, tau: float) -> None:
    for t, o in zip(target.parameters(), online.parameters()):
        t.mul_(1 - tau).add_(o, alpha=tau)


def _step_seed(seed: int, step: int) -> int:
    return (seed * 1_000_003 + step) % (2**63)


def train_step(lm: LanguageModel, mlp: torch.nn.Module, target: torch.nn.Module, opt: torch.optim.Optimizer,
               task: Task, batch: list[Example], cfg: RLPromptConfig, step: int) -> dict:
    """One RLPrompt update; returns its scalar statistics."""
    ids, hidden = sample_prompts(lm, mlp, cfg.samples_per_step, cfg.n_tokens,
                                 torch.Generator().manual_seed(_step_seed(cfg.seed, step)), cfg.top_k)
    reward, log_ppl = prompt_rewards(lm, task, ids, batch, cfg)
    with torch.no_grad():
        allowed = action_mask(lm, lm.logits_from_hidden(hidden), cfg.top_k)
        target_q = policy_logits(lm, target, hidden).masked_fill(~allowed, float("-inf"))
    shaped = cfg.reward_scale * zscore(reward)
    if cfg.sql_loss == "path":  # log pi over the actions the policy can sample
        loss = path_loss(policy_logits(lm, mlp, hidden).masked_fill(~allowed, float("-inf")), ids, target_q, shaped)
    else:
        loss = soft_q_loss(policy_logits(lm, mlp, hidden), ids, target_q, shaped)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    polyak_update(target, mlp, cfg.target_update)
    return {"step": step + 1, "loss": round(loss.item(), 6), "reward_mean": round(reward.mean().item(), 6),
            "reward_max": round(reward.max().item(), 6), "log_perplexity_mean": round(log_ppl.mean().item(), 6)}


# ---------------------------------------------------------------------------------------------- checkpoints
def _save_checkpoint(out: Path, mlp: torch.nn.Module, target: torch.nn.Module, opt: torch.optim.Optimizer,
                     state: dict) -> None:
    tensors = {f"mlp.{k}": v for k, v in mlp.state_dict().items()}
    tensors.update({f"target.{k}": v for k, v in target.state_dict().items()})
    tensors.update(optimizer_tensors(opt, _adam_names(opt)))
    with atomic.directory(runs.checkpoint_dir(out, state["step"])) as tmp:
        atomic.save_tensors(tmp / TENSORS_NAME, tensors)
        atomic.write_json(tmp / STATE_NAME, state)


def _load_checkpoint(ckpt: Path, mlp: torch.nn.Module, target: torch.nn.Module, opt: torch.optim.Optimizer) -> dict:
    t = load_file(str(ckpt / TENSORS_NAME))
    mlp.load_state_dict({k[4:]: v for k, v in t.items() if k.startswith("mlp.")})
    target.load_state_dict({k[7:]: v for k, v in t.items() if k.startswith("target.")})
    load_optimizer_tensors(opt, _adam_names(opt), t)
    return json.loads((ckpt / STATE_NAME).read_text())


def _adam_names(opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """adam.<i> for the i-th parameter, as torch numbers them in ``state_dict``."""
    return {f"adam.{i}": p for i, p in enumerate(p for group in opt.param_groups for p in group["params"])}


# ---------------------------------------------------------------------------------------------- the run
def optimize_rlprompt(lm: LanguageModel, task: Task, cfg: RLPromptConfig, out: Path, resume: bool = False,
                      overwrite: bool = False, progress: bool = True) -> OptimizedPrompt:
    """Train the RLPrompt policy and write ``out/result.json`` (best greedy prompt by validation accuracy).

    Args:
        resume: continue from the newest complete checkpoint in ``out`` (bit-identical to an uninterrupted run).
        overwrite: delete a previous run in ``out`` and start over.
    """
    if task.answer_type != "classification":
        raise Soft2HardError(f"RLPrompt needs a classification task; {task.name!r} is a {task.answer_type} task")
    verbalizers = [task.format_target(lab) for lab in task.labels]
    if len(set(verbalizers)) < len(verbalizers):
        raise Soft2HardError(f"task {task.name!r}: two labels format to the same verbalizer")
    out = Path(out)
    splits = task.splits(seed=cfg.seed, max_examples=cfg.max_train_examples)
    val, test = splits.validation[: cfg.max_eval_examples], splits.test[: cfg.max_test_examples]
    resolved = runs.settings(lm.name, task.name, cfg, method="rlprompt")
    existing = runs.prepare(out, resolved, "an RLPrompt run", STATE_NAME, resume, overwrite, result_name="result.json")

    assert not lm.trainable_parameters(), "the LM must stay frozen"
    mlp = make_mlp(lm.d_model, cfg.mlp_hidden, cfg.seed).to(lm.device)
    target = copy.deepcopy(mlp).requires_grad_(False)
    opt = torch.optim.Adam(mlp.parameters(), lr=cfg.lr)
    state = {"step": 0, "history": [], "validation": [], "best": None, "train_seconds": 0.0}
    if resume and existing:
        state = _load_checkpoint(existing[-1], mlp, target, opt)

    bar = tqdm(total=cfg.steps, initial=state["step"], desc=f"rlprompt {task.name}", disable=not progress,
               dynamic_ncols=True)
    while state["step"] < cfg.steps:
        t0 = time.time()
        step = state["step"]
        stats = train_step(lm, mlp, target, opt, task, batch_for_step(splits.train, step, cfg), cfg, step)
        state["history"].append(stats)
        state["step"] = step = step + 1
        state["train_seconds"] += time.time() - t0
        bar.update(1)
        bar.set_postfix(reward=f"{stats['reward_mean']:.3f}")
        if step % cfg.eval_every == 0 or step == cfg.steps:
            ids = sample_prompts(lm, mlp, 1, cfg.n_tokens, None, cfg.top_k)[0][0].tolist()
            acc = score(lm, lm.embed(torch.tensor(ids)), task, val, cfg.eval_batch_size)
            text = lm.decode(ids)
            state["validation"].append({"step": step, "score": acc, "ids": ids, "text": text})
            if state["best"] is None or acc > state["best"]["score"]:
                state["best"] = {"step": step, "score": acc, "ids": ids, "text": text}
            if progress:
                bar.write(f"step {step}: validation {acc:.3f}  prompt {text!r}")
            _save_checkpoint(out, mlp, target, opt, state)
    bar.close()
    assert not lm.trainable_parameters(), "the LM must stay frozen"

    best = state["best"]
    test_acc = score(lm, lm.embed(torch.tensor(best["ids"])), task, test, cfg.eval_batch_size)
    scrut = scrutability(lm, best["text"], best["ids"])
    result = OptimizedPrompt(
        method="rlprompt", model=lm.name, task=task.name, seed=cfg.seed, n_tokens=cfg.n_tokens, steps=cfg.steps,
        weight=cfg.weight, ids=best["ids"], text=best["text"], best_step=best["step"],
        validation_score=best["score"], test_score=test_acc, metric="accuracy", perplexity=scrut["perplexity"],
        word_validity=scrut["word_validity"], degenerate=scrut["degenerate"], n_train=len(splits.train),
        n_validation=len(val), n_test=len(test), history=state["validation"],
        extra={"top_k": cfg.top_k, "train_seconds": round(state["train_seconds"], 2),
               "training": state["history"], "config": resolved})
    atomic.write_json(out / "result.json", result.to_dict())  # written last: its presence marks a finished run
    return result
