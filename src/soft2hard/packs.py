"""Packs: train many soft prompts in one model pass (METHODS.md §8, "many prompts per pass").

A pack holds up to K jobs (task, settings, run folder). Each step runs one forward/backward over the union of the
jobs' batches: row r carries the prompt of its job, each prompt's positions run once and are shared by its rows
(:meth:`LanguageModel.prefix_cache`), and the loss is the sum of the jobs' mean losses, so a prompt's gradient is
exactly its own job's. Each job keeps its own AdamW (elementwise, so jobs stay independent), its own gradient
clipping, schedule, seeded batches, validation, best checkpoint, early stopping and run folder - everything
:func:`soft2hard.tuning.tune` writes. A finished job leaves the pack and the next waiting job takes its slot.

Resume. A row's numerics depend on its pack-mates only through padding and matmul shapes (float rounding), so a
resumed pack is bit-identical only if it replays the same composition. At every event (a validation, a job
finishing or joining) every active job is checkpointed and then a journal is written atomically; a resume
restarts each active job from the step the journal names and replays the same admissions, so it continues
bit-identically (the rule of ``tune``). A journal made for another job list or pack size is ignored (each job
then resumes from its newest checkpoint, equal within float rounding).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from soft2hard import atomic, runs
from soft2hard.errors import Soft2HardError
from soft2hard.lm import LanguageModel
from soft2hard.prompts import SoftPrompt
from soft2hard.scoring import score_many
from soft2hard.tasks.base import Task
from soft2hard.training import set_lr, warmup_cosine
from soft2hard.tuning import (
    TuningConfig,
    TuningResult,
    TuningRun,
    batch_for_step,
    finish_run,
    save_checkpoint,
    start_run,
    training_target,
)

logger = logging.getLogger(__name__)


@dataclass
class TuningJob:
    """One soft prompt to train: a task (or a function that loads it, so that a bad task file fails this job
    only, when its turn comes), its settings (the seed included) and its run folder."""

    task: Task | Callable[[], Task]
    cfg: TuningConfig
    out: Path
    name: str = ""  # for messages; defaults to the run folder

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        self.name = self.name or str(self.out)


@dataclass
class JobOutcome:
    job: TuningJob
    result: TuningResult | None = None  # None when the job failed or had finished before this call
    error: str | None = None


@dataclass(eq=False)
class _Slot(TuningRun):
    """A job's run (as ``tune`` sets it up) while it is in the pack."""

    job: TuningJob
    pending_losses: list = field(default_factory=list)  # device tensors, read at the next event (no host sync)
    pending_tokens: list = field(default_factory=list)  # likewise: the tokens of each step (TuningRun.state)


def _open(lm: LanguageModel, job: TuningJob, resume: bool, overwrite: bool, from_step: int | None) -> _Slot:
    """Set up a job's run as ``tune`` does; ``from_step``: the step the journal names (0: start afresh)."""
    if job.cfg.objective != "task":
        raise Soft2HardError("packs train task-objective prompts; a distillation run trains alone (tune)")
    task = job.task() if callable(job.task) else job.task
    return _Slot(**vars(start_run(lm, task, job.cfg, job.out, resume, overwrite, from_step)), job=job)


def _step(lm: LanguageModel, slots: list[_Slot]) -> None:
    """One optimizer step for every slot, in one forward/backward over all their batches."""
    contexts, targets, rows = [], [], []
    for j, s in enumerate(slots):
        set_lr(s.opt, warmup_cosine(s.state["step"], s.cfg.steps, s.cfg.lr, s.cfg.warmup_steps))
        batch = batch_for_step(s.train, s.state["step"], s.cfg)
        contexts += [s.task.format_input(ex.input) for ex in batch]
        targets += [training_target(s.task, ex.target) for ex in batch]
        rows += [j] * len(batch)
    row = torch.tensor(rows, device=lm.device)
    prompts = torch.stack([s.prompt for s in slots])  # (K, n, D)
    total, count, mask = lm.target_logprobs(prompts, contexts, targets, row, with_mask=True)
    k = len(slots)
    losses = -torch.zeros(k, device=total.device).index_add(0, row, total) \
        / torch.zeros(k, device=total.device).index_add(0, row, count)
    # tokens a row ran: soft prompt + context = its mask (context + target) less its target tokens
    ran = mask.sum(-1).to(count.device) - count.long() + prompts.shape[1]  # (B,)
    tokens = torch.zeros(k, dtype=torch.long, device=count.device).index_add(0, row.to(count.device), ran)
    losses.sum().backward()  # prompt j receives exactly its own job's gradient
    for j, s in enumerate(slots):
        torch.nn.utils.clip_grad_norm_([s.prompt], s.cfg.grad_clip)  # per prompt, never across prompts
        s.opt.step()
        s.opt.zero_grad(set_to_none=True)
        s.pending_losses.append(losses[j].detach())
        s.pending_tokens.append(tokens[j])
        s.state["step"] += 1


def _flush(s: _Slot) -> None:
    """Read the losses and token counts the device holds since the last event into the state."""
    if s.pending_losses:
        s.state["losses"] += [round(v, 5) for v in torch.stack(s.pending_losses).float().cpu().tolist()]
        s.state["tokens"] += int(torch.stack(s.pending_tokens).sum())
        s.pending_losses, s.pending_tokens = [], []


def _prompts(slots: list[_Slot], best: bool = False) -> torch.Tensor:
    if best:
        return torch.stack([SoftPrompt.load(runs.checkpoint_dir(s.out, s.state["best_step"]) / "prompt")
                            .tensor.to(s.prompt.device) for s in slots])
    return torch.stack([s.prompt.detach() for s in slots])


def _batch_size(slots: list[_Slot]) -> int:
    return max(s.cfg.eval_batch_size for s in slots) * max(1, len(slots))


def _validate(lm: LanguageModel, slots: list[_Slot]) -> None:
    scores = score_many(lm, _prompts(slots), [(j, s.task, s.val) for j, s in enumerate(slots)], _batch_size(slots))
    for s, val_score in zip(slots, scores):
        step = s.state["step"]
        s.state["validation"].append({"step": step, "score": val_score, "loss": s.state["losses"][-1]})
        if s.state["best_validation"] is None or val_score >= s.state["best_validation"]:
            s.state["best_validation"], s.state["best_step"] = val_score, step


def _baselines(lm: LanguageModel, slots: list[_Slot]) -> None:
    items = [(None, s.task, part) for s in slots for part in (s.test, s.val)]
    scores = score_many(lm, None, items, _batch_size(slots))
    for j, s in enumerate(slots):
        s.state["baseline_score"], s.state["baseline_validation"] = scores[2 * j], scores[2 * j + 1]


def _finish(lm: LanguageModel, slots: list[_Slot]) -> list[TuningResult]:
    best = _prompts(slots, best=True)
    tests = score_many(lm, best, [(j, s.task, s.test) for j, s in enumerate(slots)], _batch_size(slots))
    return [finish_run(lm, s, best[j].cpu(), tests[j]) for j, s in enumerate(slots)]


def tune_many(lm: LanguageModel, jobs: Sequence[TuningJob], pack: int = 8, resume: bool = True,
              overwrite: bool = False, journal: Path | None = None, progress: bool = True,
              on_outcome: Callable[[JobOutcome], None] | None = None, attention: str | None = "auto"
              ) -> list[JobOutcome]:
    """Train every job, up to ``pack`` at a time in shared passes; returns one outcome per job, in order.

    Jobs whose run folder holds a finished run are skipped (``resume``); a job that fails (its task does not load,
    a target tokenizes to nothing, ...) is reported in its outcome and the others go on. Jobs train together only
    if they share ``n_tokens``; others wait until the pack empties. ``journal`` (a JSON file) makes resumption
    bit-identical; ``on_outcome`` is called as each job ends. ``attention``: the attention implementation while
    training ("auto": eager on a CPU, where it is the faster one for short rows; the model's own elsewhere).
    """
    if attention == "auto":
        attention = "eager" if lm.device.type == "cpu" else None
    with lm.attention(attention):
        return _tune_many(lm, jobs, pack, resume, overwrite, journal, progress, on_outcome)


def _tune_many(lm: LanguageModel, jobs: Sequence[TuningJob], pack: int, resume: bool, overwrite: bool,
               journal: Path | None, progress: bool, on_outcome) -> list[JobOutcome]:
    if pack < 1:
        raise Soft2HardError(f"pack size must be >= 1, got {pack}")
    jobs = list(jobs)
    ids = [str(j.out) for j in jobs]
    if len(set(ids)) != len(ids):
        raise Soft2HardError("two jobs share a run folder; give each (task, seed) its own --out")
    stored = _read_journal(journal, ids, pack) if resume and not overwrite else None
    outcomes: dict[int, JobOutcome] = {}
    resumed_at = dict(stored["active"]) if stored else {}
    failed_before = set(stored["failed"]) if stored else set()

    def report(i: int, outcome: JobOutcome) -> None:
        outcomes[i] = outcome
        if on_outcome:
            on_outcome(outcome)
        bar.update(1)

    bar = tqdm(total=len(jobs), desc="tune packs", unit="prompt", disable=not progress, dynamic_ncols=True)
    queue = []
    for i, job in enumerate(jobs):
        if str(job.out) in failed_before:
            report(i, JobOutcome(job, error="failed earlier in this pack (rerun after it ends to retry)"))
        elif resume and not overwrite and (job.out / "metrics.json").is_file() and str(job.out) not in resumed_at:
            report(i, JobOutcome(job))
        else:
            queue.append(i)
    # the journal's active jobs first, in their slot order, then the waiting ones in list order
    queue.sort(key=lambda i: (ids[i] not in resumed_at, list(resumed_at).index(ids[i]) if ids[i] in resumed_at
                              else i))
    active: list[tuple[int, _Slot]] = []
    failed: list[str] = sorted(failed_before)
    t_start, steps_done = time.time(), 0

    def fail(i: int, error: str) -> None:
        failed.append(ids[i])
        bar.write(f"failed: {jobs[i].name}: {error}") if progress else logger.warning("failed: %s: %s",
                                                                                      jobs[i].name, error)
        report(i, JobOutcome(jobs[i], error=error))

    def commit() -> None:
        """Every active job checkpointed at its step, then the journal: a resume replays from here."""
        for _, s in active:
            _flush(s)
            save_checkpoint(s, lm.name)
        _write_journal(journal, ids, pack, active, failed, complete=not (queue or active))

    event = True
    while queue or active:
        # 1. jobs that reached their last step (or stopped early) write their results and leave
        finished = [(i, s) for i, s in active if s.done]
        if finished:
            event = True
            for (i, _), result in _guarded(lm, finished, _finish, fail):
                report(i, JobOutcome(jobs[i], result))
            active = [(i, s) for i, s in active if not s.done and ids[i] not in failed]
        # 2. waiting jobs take the free slots (same prompt length as the pack)
        newcomers: list[tuple[int, _Slot]] = []
        while queue and len(active) + len(newcomers) < pack:
            n_tokens = (active or newcomers)[0][1].cfg.n_tokens if (active or newcomers) else None
            pick = next((q for q in queue if n_tokens is None or jobs[q].cfg.n_tokens == n_tokens), None)
            if pick is None:
                break
            queue.remove(pick)
            try:
                slot = _open(lm, jobs[pick], resume, overwrite, resumed_at.pop(ids[pick], None))
            except Soft2HardError as err:
                fail(pick, str(err))
                continue
            newcomers.append((pick, slot))
        fresh = [(i, s) for i, s in newcomers if "baseline_score" not in s.state]
        if fresh:
            _guarded(lm, fresh, _baselines, fail)
        newcomers = [(i, s) for i, s in newcomers if ids[i] not in failed]
        if newcomers:
            event = True
        active += newcomers
        if event:
            commit()
            event = False
        if not active:
            continue
        # 3. one step for the whole pack
        running = [(i, s) for i, s in active if not s.done]
        if not running:  # resumed at their last step: they finish at the top of the loop
            continue
        t0 = time.time()
        try:
            _step(lm, [s for _, s in running])
        except Soft2HardError:
            for _, s in running:
                s.opt.zero_grad(set_to_none=True)
            # find the jobs that break a step alone (forward only) and fail them; the others step next round
            if len(_guarded(lm, running, _probe, fail, together=False)) == len(running):
                raise
            active = [(i, s) for i, s in active if ids[i] not in failed]
            continue
        elapsed = (time.time() - t0) / max(1, len(running))
        steps_done += len(running)
        for _, s in running:
            s.state["train_seconds"] += elapsed
        due = [(i, s) for i, s in active if s.state["step"] % s.cfg.eval_every == 0 or s.done]
        if due:
            for _, s in due:
                _flush(s)
            _guarded(lm, due, _validate, fail)
            active = [(i, s) for i, s in active if ids[i] not in failed]
            commit()
            event = False
        bar.set_postfix_str(f"{len(active)} in pack, {steps_done / max(time.time() - t_start, 1e-9):.1f} steps/s")
    bar.close()
    for i, s in [(i, s) for i, s in enumerate(jobs) if i not in outcomes]:
        outcomes[i] = JobOutcome(s, error="not run")
    return [outcomes[i] for i in range(len(jobs))]


def _probe(lm: LanguageModel, slots: list[_Slot]) -> None:
    """The forward pass of one slot's next batch alone (to find which job broke a pack step)."""
    with torch.no_grad():
        s = slots[0]
        batch = batch_for_step(s.train, s.state["step"], s.cfg)
        lm.target_logprobs(s.prompt.detach(), [s.task.format_input(ex.input) for ex in batch],
                           [training_target(s.task, ex.target) for ex in batch])


def _guarded(lm: LanguageModel, indexed: list[tuple[int, _Slot]], run, fail, together: bool = True) -> list:
    """``run(lm, slots)`` on all slots at once; if that raises (or not ``together``), on each slot alone,
    failing those that raise by themselves. Returns ((index, slot), result) for the slots that went through."""
    if together:
        try:
            results = run(lm, [s for _, s in indexed]) or [None] * len(indexed)
            return list(zip(indexed, results))
        except Soft2HardError:
            pass  # find the slots that fail alone
    ok = []
    for i, s in indexed:
        try:
            ok.append(((i, s), (run(lm, [s]) or [None])[0]))
        except Soft2HardError as err:
            fail(i, str(err))
    return ok


def _read_journal(path: Path | None, ids: list[str], pack: int) -> dict | None:
    if path is None or not Path(path).is_file():
        return None
    try:
        stored = atomic.read_json(path)
    except Soft2HardError as err:
        logger.warning("%s; each job resumes from its newest checkpoint", err)
        return None
    if not isinstance(stored, dict) or stored.get("jobs") != ids or stored.get("pack") != pack \
            or stored.get("complete"):
        return None
    return {"active": [(str(a), int(b)) for a, b in stored.get("active", [])],
            "failed": [str(f) for f in stored.get("failed", [])]}


def _write_journal(path: Path | None, ids: list[str], pack: int, active, failed: list[str], complete: bool) -> None:
    if path is not None:
        atomic.write_json(path, {"pack": pack, "jobs": ids, "complete": complete, "failed": failed,
                                 "active": [[ids[i], s.state["step"]] for i, s in active]})
