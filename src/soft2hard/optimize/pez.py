"""PEZ: hard prompts by projected gradient descent (Wen et al. 2023, "Hard Prompts Made Easy").

A continuous prompt P (n, D) lives in the model's scaled embedding space. Each step projects P to its nearest
vocabulary rows (cosine), runs the model on those *projected* embeddings and applies the gradient to P
(straight-through). P itself is never read by the model, so what is evaluated and kept is always a real token
sequence: the best projected prompt on the validation split. Token ids are stored, not only text, because a BPE
round-trip of the decoded string can give different tokens.

Interpretability objective (METHODS.md section 6): ``loss = (1-w)*task + w*fluency``, fluency being the
next-token NLL of the projected prompt under the same LM, so a sweep over ``w`` shows the accuracy/readability
trade-off. Optimizer as in the official LM setting: Adafactor lr 0.3, grad clip 1.0 (torch's Adafactor treats
lr as the cap of a relative step size, scaled by the prompt's RMS). Resume follows ``tuning``: batches are a pure
function of (seed, step) and checkpoints hold P plus the Adafactor state, so a resumed run is bit-identical.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from tqdm.auto import tqdm

from soft2hard import atomic, runs
from soft2hard.errors import Soft2HardError
from soft2hard.faithfulness import scrutability
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
from soft2hard.tuning import batch_for_step, batch_loss

logger = logging.getLogger(__name__)

INITS = ("labels", "vocab")
STATE_NAME = "state.json"
TENSORS_NAME = "pez.safetensors"
RESULT_NAME = "result.json"


@dataclass
class PezConfig:
    n_tokens: int = 10  # hard-prompt length (official LM setting)
    steps: int = 200
    batch_size: int = 8
    lr: float = 0.3  # Adafactor
    grad_clip: float = 1.0
    weight: float = 0.0  # w in loss = (1-w)*task + w*fluency
    init: str = "labels"  # labels: label words / target tokens repeated | vocab: seeded random vocabulary rows
    seed: int = 0
    eval_every: int = 50  # validate the projected prompt + checkpoint every this many steps (and at the end)
    max_eval_examples: int = 64
    max_test_examples: int = 200
    max_train_examples: int | None = None
    eval_batch_size: int = 16

    def __post_init__(self) -> None:
        check_ints(self, "n_tokens", "steps", "batch_size", "eval_every", "max_eval_examples", "max_test_examples",
                   "eval_batch_size")
        check_ints(self, "max_train_examples", optional=True)
        check_ints(self, "seed", minimum=None)
        check_numbers(self, "lr", "grad_clip")
        w = self.weight
        if not is_number(w) or not 0 <= w <= 1:
            raise Soft2HardError(f"weight must be a number in [0, 1], got {w!r}")
        check_choice(self, "init", INITS)


def project_straight_through(prompt: torch.Tensor, vocab: torch.Tensor, inv_norm: torch.Tensor | None = None
                             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest vocabulary rows by cosine, with a straight-through gradient. (n, D), (V, D) -> (n, D), (n,)

    The forward value is exactly ``vocab[ids]`` (adding ``P - P.detach()``, which is 0, rather than
    ``P + (E - P).detach()``, which can be off by rounding); the gradient reaching ``prompt`` is the gradient
    w.r.t. the projected embeddings. ``inv_norm`` (V,) = 1/|vocab row| can be cached across steps.
    """
    with torch.no_grad():
        if inv_norm is None:
            inv_norm = vocab.float().norm(dim=-1).clamp_min(1e-12).reciprocal()
        sims = (F.normalize(prompt.detach().float(), dim=-1) @ vocab.float().T) * inv_norm  # (n, V) cosine
        ids = sims.argmax(-1)
    return vocab[ids].to(prompt.dtype) + (prompt - prompt.detach()), ids


def prompt_nll(lm: LanguageModel, embeds: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Mean next-token NLL of a prompt (first token given BOS), run on ``embeds`` (n, D) so that the gradient
    reaches them; ``ids`` (n,) are the tokens that ``embeds`` stand for."""
    bos = lm.embed(torch.tensor([lm.bos_id], device=lm.device))  # (1, D)
    seq = torch.cat([bos, embeds.to(device=lm.device, dtype=bos.dtype)])[None]  # (1, n+1, D)
    out = lm.forward_embeds(seq, torch.ones(seq.shape[:2], dtype=torch.long, device=lm.device))
    logits = lm.logits_from_hidden(out.last_hidden_state[0, :-1])  # (n, V): position i predicts token i
    return F.cross_entropy(logits, ids.to(logits.device))


def pez_loss(lm: LanguageModel, prompt: torch.Tensor, task: Task, batch: list[Example], weight: float,
             vocab: torch.Tensor, inv_norm: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    """``(1-w)*task + w*fluency`` on the projected prompt. Returns (loss, projected ids, parts for logging)."""
    p_st, ids = project_straight_through(prompt, vocab, inv_norm)
    w = float(weight)
    loss, parts = torch.zeros((), device=prompt.device), {}
    if w < 1:  # skip the task forward when it has no weight
        task_loss = batch_loss(lm, p_st, task, batch)  # mean CE of training targets given [prompt][input]
        loss, parts["task"] = loss + (1 - w) * task_loss, task_loss.item()
    if w > 0:
        fluency = prompt_nll(lm, p_st, ids)
        loss, parts["fluency"] = loss + w * fluency, fluency.item()
    return loss, ids, parts


def initial_prompt(lm: LanguageModel, task: Task, train: tuple[Example, ...], cfg: PezConfig,
                   vocab: torch.Tensor) -> torch.Tensor:
    """Label words (classification) or training-target tokens (generation) repeated to n tokens, or seeded
    random vocabulary rows among the 5000 most frequent non-special tokens."""
    if cfg.init == "labels":
        texts = list(task.labels) if task.labels is not None else [ex.target for ex in train]
        ids: list[int] = []
        for text in texts:
            ids += lm.encode(task.format_target(text), special=False)
            if len(ids) >= cfg.n_tokens:
                break
        if not ids:
            raise Soft2HardError(f"task {task.name!r}: its labels/targets tokenize to nothing; use init 'vocab'")
        ids = (ids * math.ceil(cfg.n_tokens / len(ids)))[: cfg.n_tokens]
    else:
        special = lm.special_ids
        pool = torch.tensor([i for i in range(min(5000, vocab.shape[0])) if i not in special])
        ids = pool[torch.randint(len(pool), (cfg.n_tokens,), generator=torch.Generator().manual_seed(cfg.seed))]
    return vocab[torch.as_tensor(ids, device=vocab.device)].float().clone()


def _save_checkpoint(out: Path, prompt: torch.Tensor, opt: torch.optim.Optimizer, state: dict) -> None:
    tensors = {"prompt": prompt.detach(), **optimizer_tensors(opt, {"opt": prompt})}  # Adafactor: opt.step, ...
    with atomic.directory(runs.checkpoint_dir(out, state["step"])) as tmp:
        atomic.save_tensors(tmp / TENSORS_NAME, tensors)
        atomic.write_json(tmp / STATE_NAME, state)


def _load_checkpoint(ckpt: Path, prompt: torch.nn.Parameter, opt: torch.optim.Optimizer) -> dict:
    tensors = load_file(str(ckpt / TENSORS_NAME))
    with torch.no_grad():
        prompt.copy_(tensors.pop("prompt").to(prompt.device))
    load_optimizer_tensors(opt, {"opt": prompt}, tensors)
    return json.loads((ckpt / STATE_NAME).read_text())


def optimize_pez(lm: LanguageModel, task: Task, cfg: PezConfig, out: Path, resume: bool = False,
                 overwrite: bool = False, progress: bool = True) -> OptimizedPrompt:
    """Optimize a hard prompt with PEZ and write ``out/result.json`` (+ config.json, checkpoints/).

    Args:
        resume: continue from the newest complete checkpoint in ``out`` (also after kill -9).
        overwrite: delete a previous run in ``out`` and start over.
    Returns the result dict: best projected prompt (ids, text), its validation/test scores, perplexity,
    degenerate flags and the per-eval history.
    """
    out = Path(out)
    splits = task.splits(seed=cfg.seed, max_examples=cfg.max_train_examples)
    val, test = splits.validation[: cfg.max_eval_examples], splits.test[: cfg.max_test_examples]
    resolved = runs.settings(lm.name, task.name, cfg, method="pez")
    existing = runs.prepare(out, resolved, "a PEZ run", STATE_NAME, resume, overwrite, result_name=RESULT_NAME)

    emb = lm.vocab_embeddings()
    vocab = emb[: min(len(lm.tokenizer), emb.shape[0])]  # rows past the tokenizer decode to nothing
    inv_norm = vocab.float().norm(dim=-1).clamp_min(1e-12).reciprocal()
    prompt = torch.nn.Parameter(initial_prompt(lm, task, splits.train, cfg, vocab).to(lm.device))  # fp32 master
    opt = torch.optim.Adafactor([prompt], lr=cfg.lr)
    state = {"step": 0, "losses": [], "history": [], "best": None}
    if resume and existing:
        state = _load_checkpoint(existing[-1], prompt, opt)

    bar = tqdm(total=cfg.steps, initial=state["step"], desc=f"pez {task.name}", disable=not progress,
               dynamic_ncols=True)
    step = state["step"]
    while step < cfg.steps:
        batch = batch_for_step(splits.train, step, cfg)
        loss, _, parts = pez_loss(lm, prompt, task, batch, cfg.weight, vocab, inv_norm)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([prompt], cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss_value = loss.item()
        step += 1
        state["step"] = step
        state["losses"].append({"loss": round(loss_value, 5), **{k: round(v, 5) for k, v in parts.items()}})
        bar.update(1)
        bar.set_postfix(loss=f"{loss_value:.3f}")
        if step % cfg.eval_every == 0 or step == cfg.steps:
            ids = project_straight_through(prompt.detach(), vocab, inv_norm)[1].tolist()
            val_score = score(lm, lm.embed(torch.tensor(ids)), task, val, cfg.eval_batch_size)
            entry = {"step": step, "score": val_score, "loss": round(loss_value, 5), "ids": ids,
                     "text": lm.tokenizer.decode(ids, skip_special_tokens=False)}
            state["history"].append(entry)
            if state["best"] is None or val_score > state["best"]["score"]:  # ties keep the earlier prompt
                state["best"] = entry
            line = f"step {step}: loss {loss_value:.4f}  validation {val_score:.3f}  {entry['text']!r}"
            bar.write(line) if progress else logger.info(line)
            _save_checkpoint(out, prompt, opt, state)
    bar.close()

    best = state["best"]
    test_score = score(lm, lm.embed(torch.tensor(best["ids"])), task, test, cfg.eval_batch_size)
    scrut = scrutability(lm, best["text"], best["ids"])
    result = OptimizedPrompt(
        method="pez", model=lm.name, task=task.name, seed=cfg.seed, n_tokens=cfg.n_tokens, steps=cfg.steps,
        weight=cfg.weight, ids=best["ids"], text=best["text"], best_step=best["step"],
        validation_score=best["score"], test_score=test_score,
        metric="accuracy" if task.answer_type == "classification" else "exact_match", perplexity=scrut["perplexity"],
        word_validity=scrut["word_validity"], degenerate=scrut["degenerate"], n_train=len(splits.train),
        n_validation=len(val), n_test=len(test), history=state["history"],
        extra={"answer_type": task.answer_type, "tokens": lm.tokenizer.convert_ids_to_tokens(best["ids"]),
               "losses": state["losses"]})
    atomic.write_json(out / RESULT_NAME, result.to_dict())  # written last: its presence marks a finished run
    return result
