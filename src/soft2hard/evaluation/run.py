"""``soft2hard evaluate``: tasks x conditions x target models -> one results table, resumable.

An evaluation folder holds:
    settings.json     what was asked (a rerun must ask the same, or use another folder)
    texts.json        per task: the reference and every interpretation text, with its faithfulness and perplexity
    results.json      one row per (model, task, condition): score, metric, exact match, ROUGE-L, text metrics
    predictions.json  the outputs behind each row (input, gold, output)
    summary.json, results.csv, results.md   means and spread per model and condition (+ the software versions)
    api_cache.sqlite  API responses (when an API target is used): a rerun sends no request twice
Every file is written atomically after each finished cell, so a run killed at any moment resumes where it
stopped and never leaves a half-written file.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from soft2hard import atomic, runs
from soft2hard.errors import Soft2HardError
from soft2hard.evaluation import conditions as cond
from soft2hard.evaluation.source import EvalTask, SourceSide
from soft2hard.interpret.selection import parse_layers
from soft2hard.metrics import mean_and_std
from soft2hard.provenance import provenance
from soft2hard.targets import LazyTarget
from soft2hard.training import is_int, is_number

logger = logging.getLogger(__name__)
SETTINGS_VERSION = 1
ROW_TEXT_FIELDS = ("perplexity", "word_validity", "faithfulness", "faithfulness_kl", "degenerate")


@dataclass(frozen=True)
class EvalConfig:
    # help: the field's documentation, also the CLI option's help (soft2hard.cli.common.ConfigOptions)
    conditions: tuple[str, ...] = field(default=cond.DEFAULT_CONDITIONS, metadata={
        "help": f"comma-separated, from {', '.join(cond.CONDITIONS)} (default: all but pez and rlprompt)"})
    k_shot: int = field(default=3, metadata={"help": "solved examples in the few-shot condition"})
    max_examples: int = field(default=50, metadata={"help": "test examples per task"})
    seed: int = field(default=0, metadata={"help": "few-shot demo sampling; split seed of bare tasks"})
    faithfulness_examples: int = field(default=24, metadata={
        "help": "test examples behind each text's faithfulness"})
    pez_steps: int = field(default=150, metadata={"help": "PEZ optimizer steps"})
    pez_weight: float = field(default=0.3, metadata={
        "help": "PEZ interpretability weight w in [0, 1): (1-w)*task + w*fluency"})
    rlprompt_steps: int = field(default=150, metadata={"help": "RLPrompt optimizer steps"})
    rlprompt_weight: float = field(default=0.1, metadata={
        "help": "RLPrompt perplexity penalty lambda >= 0: reward -= lambda * log-perplexity of the prompt "
                "(classification tasks only)"})
    inspect_grid: str | None = field(default=None, metadata={
        "help": "also score an InSPEcT layer grid per task for the report's heatmap, e.g. 1-29:7"})
    candidates: int = field(default=8, metadata={
        "help": "translator candidates verified on the source model for translator_selected"})
    selection_inputs: int = field(default=16, metadata={
        "help": "unlabelled validation inputs the translator_selected candidates are verified on"})
    induction_examples: int = field(default=5, metadata={
        "help": "solved training examples the inducer sees (induced condition)"})
    inducer: str = field(default="source", metadata={
        "help": "who writes the induced instruction: source (the source model) or the name of a target"})

    def __post_init__(self) -> None:
        unknown = [c for c in self.conditions if c not in cond.CONDITIONS]
        if unknown or not self.conditions:
            raise Soft2HardError(f"unknown condition(s) {', '.join(unknown) or '(none given)'}; "
                                 f"choose from {', '.join(cond.CONDITIONS)}")
        for name in ("k_shot", "max_examples", "faithfulness_examples", "pez_steps", "rlprompt_steps", "candidates",
                     "selection_inputs", "induction_examples"):
            if not is_int(getattr(self, name)) or getattr(self, name) < 1:
                raise Soft2HardError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if not 0.0 <= self.pez_weight < 1.0:
            raise Soft2HardError(f"pez_weight must be in [0, 1), got {self.pez_weight}")
        if not (is_number(self.rlprompt_weight) and self.rlprompt_weight >= 0):
            raise Soft2HardError(f"rlprompt_weight must be a number >= 0, got {self.rlprompt_weight!r}")
        if self.inspect_grid is not None:
            parse_layers(self.inspect_grid)

    def target_conditions(self) -> list[str]:
        return [c for c in self.conditions if c in cond.TARGET_CONDITIONS]

    def text_settings(self) -> dict[str, dict]:
        """What the text conditions that have settings need: the optimizers' (seeded per task with its split
        seed), the translator's selection and the induction's."""
        return {"pez": {"steps": self.pez_steps, "weight": self.pez_weight},
                "rlprompt": {"steps": self.rlprompt_steps, "weight": self.rlprompt_weight},
                "translator_selected": {"candidates": self.candidates, "inputs": self.selection_inputs},
                "induced": {"examples": self.induction_examples, "seed": self.seed}}


def check_settings(out: Path, settings: dict) -> None:
    """Write settings.json, or check that a rerun asks for what the folder already holds.

    A setting added to EvalConfig after the folder was made counts as its default there (the folder was run
    without it, i.e. as the default behaves), so folders from older versions still resume."""
    path = out / "settings.json"
    if path.exists():
        stored = atomic.read_json(path)
        if isinstance(stored, dict):
            stored = json_ready(asdict(EvalConfig())) | stored
        changed = runs.changed_settings(stored, settings, path)
        if changed:
            raise Soft2HardError(f"{out} holds an evaluation with other settings ({', '.join(changed)}); "
                                 "rerun with the same ones to resume, or use a new --out")
        return
    atomic.write_json(path, settings)


class Evaluation:
    """The state of one evaluation folder: texts, rows and predictions, saved after every cell."""

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self.texts: dict = self._read("texts.json", {})
        self.rows: list[dict] = self._read("results.json", [])
        self.predictions: dict = self._read("predictions.json", {})
        self.done = {(r["model"], r["task"], r["condition"]) for r in self.rows}

    def _read(self, name: str, default):
        path = self.out / name
        if not path.exists():
            return default
        data = atomic.read_json(path)
        if not isinstance(data, type(default)):
            raise Soft2HardError(f"{path}: expected a JSON {type(default).__name__}; delete the folder to start over")
        return data

    def add(self, row: dict, records: list[dict]) -> None:
        self.rows.append(row)
        self.predictions[f"{row['model']}|{row['task']}|{row['condition']}"] = records
        self.done.add((row["model"], row["task"], row["condition"]))
        atomic.write_json(self.out / "predictions.json", self.predictions)
        atomic.write_json(self.out / "results.json", self.rows)  # last: a row exists only with its predictions

    def save_texts(self) -> None:
        atomic.write_json(self.out / "texts.json", self.texts)


def _row(item: EvalTask, condition: str, model: str, scores: dict, instruction: str | None,
         text_info: dict | None) -> dict:
    row = {"task": item.name, "answer_type": item.answer_type, "condition": condition, "model": model, **scores,
           "instruction": instruction}
    row.update({k: (text_info or {}).get(k) for k in ROW_TEXT_FIELDS})
    if (text_info or {}).get("seen_in_training"):  # the interpreter saw this task: not a held-out score
        row["seen_in_training"] = True
    return row


def _source_work(state: Evaluation, item: EvalTask, source: SourceSide, source_name: str, cfg: EvalConfig,
                 inducer, bar) -> None:
    entry = state.texts.setdefault(item.name, {"answer_type": item.answer_type, "reference": item.reference,
                                               "origin": item.origin, "texts": {}})
    test = item.test(cfg.max_examples)
    wanted = dict.fromkeys(cond.text_of(c) for c in cfg.conditions)
    for condition in [c for c in wanted if c in cond.TEXT_CONDITIONS and c not in entry["texts"]]:
        bar.set_postfix_str(f"{item.name}: {condition} text")
        info = source.text(item, condition, cfg.text_settings(), state.out, inducer=inducer)
        info.update(source.text_metrics(item, info["text"], test[: cfg.faithfulness_examples]))
        entry["texts"][condition] = info
        state.save_texts()
    if cfg.inspect_grid and item.prompt is not None and "inspect_grid" not in entry:
        bar.set_postfix_str(f"{item.name}: InSPEcT grid")
        entry["inspect_grid"] = source.inspect_grid(item, parse_layers(cfg.inspect_grid))
        state.save_texts()
    if "soft_prompt" in cfg.conditions and (source_name, item.name, "soft_prompt") not in state.done:
        bar.set_postfix_str(f"{item.name}: soft prompt")
        outputs = source.soft_prompt_outputs(item, test)
        golds = [ex.target for ex in test]
        state.add(_row(item, "soft_prompt", source_name, cond.score_outputs(item.task, outputs, golds), None, None),
                  _records(test, outputs))
        bar.update(1)


def _records(examples, outputs: list[str]) -> list[dict]:
    return [{"input": ex.input, "gold": ex.target, "output": o} for ex, o in zip(examples, outputs)]


def _target_cell(state: Evaluation, item: EvalTask, condition: str, target: LazyTarget, cfg: EvalConfig) -> None:
    test = item.test(cfg.max_examples)
    text_info = state.texts[item.name]["texts"].get(cond.text_of(condition))
    instruction = text_info["text"] if text_info else None
    demos = cond.few_shot_demos(item.train(), cfg.k_shot, cfg.seed) if cond.uses_demos(condition) else ()
    prompts = cond.target_prompts(condition, test, instruction, demos)
    outputs = target.complete(prompts, max_tokens=cond.max_answer_tokens(item.task, test), stop=cond.STOP)
    scores = cond.score_outputs(item.task, outputs, [ex.target for ex in test])
    state.add(_row(item, condition, target.name, scores, instruction, text_info), _records(test, outputs))


def evaluate(items: list[EvalTask], source: SourceSide, source_name: str, targets: list[LazyTarget],
             cfg: EvalConfig, out: Path, progress: bool = True, provenance: dict | None = None) -> list[dict]:
    """Run every unfinished cell and write the folder's files; returns the results rows."""
    if not items:
        raise Soft2HardError("no tasks to evaluate")
    missing = [i.name for i in items if i.prompt is None]
    needs = [c for c in cfg.conditions if c in cond.NEEDS_SOFT_PROMPT]
    if missing and needs:
        raise Soft2HardError(f"no soft prompt for {', '.join(missing[:3])}: the conditions {', '.join(needs)} need "
                             "one (pass --dod DIR or --prompt TASK=PATH), or leave them out with --conditions")
    if "rlprompt" in cfg.conditions and (generation := [i.name for i in items if i.task.answer_type != "classification"]):
        raise Soft2HardError(f"the rlprompt condition needs classification tasks; {', '.join(generation[:3])} "
                             f"{'is a generation task' if len(generation) == 1 else 'are generation tasks'}: "
                             "leave rlprompt out with --conditions, or evaluate only classification tasks")
    if cfg.target_conditions() and not targets:
        raise Soft2HardError("no target model: pass --target NAME and/or --base-url URL --api-model NAME")
    inducer = _inducer(cfg, targets)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic.remove_stale(out)
    settings = {"version": SETTINGS_VERSION, "source_model": source_name, "targets": [t.name for t in targets],
                "tasks": [i.name for i in items], **json_ready(asdict(cfg)), **(provenance or {})}
    check_settings(out, settings)
    state = Evaluation(out)
    tcond = cfg.target_conditions()
    per_task = ("soft_prompt" in cfg.conditions) + len(tcond) * len(targets)
    bar = tqdm(total=per_task * len(items), initial=len(state.rows), desc="evaluate", unit="cell", disable=not progress,
               dynamic_ncols=True)
    for item in items:
        _source_work(state, item, source, source_name, cfg, inducer, bar)
        for target in targets:
            for condition in tcond:
                if (target.name, item.name, condition) in state.done:
                    continue
                bar.set_postfix_str(f"{item.name}: {condition} on {target.name}")
                _target_cell(state, item, condition, target, cfg)
                bar.update(1)
    bar.close()
    write_tables(out, state.rows, settings)
    return state.rows


def _inducer(cfg: EvalConfig, targets: list[LazyTarget]) -> LazyTarget | None:
    """The target that writes the induced instructions (``cfg.inducer``); None for the source model."""
    if "induced" not in cfg.conditions:
        return None
    if cfg.inducer == "source":
        return None  # SourceSide.text uses its own model, loaded on first use
    by_name = {t.name: t for t in targets}
    if cfg.inducer not in by_name:
        raise Soft2HardError(f"inducer {cfg.inducer!r} is not one of this evaluation's models; choose source or "
                             f"one of the targets: {', '.join(by_name) or '(none)'}")
    return by_name[cfg.inducer]


def json_ready(d: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def summarize(rows: list[dict]) -> dict:
    """model -> condition -> mean, std and number of tasks of the score (NaN scores left out)."""
    by_model: dict = {}
    for r in rows:
        by_model.setdefault(r["model"], {}).setdefault(r["condition"], []).append(r["score"])
    out: dict = {}
    for model, by_cond in by_model.items():
        out[model] = {}
        for c, scores in by_cond.items():
            vals = [s for s in scores if s is not None and not math.isnan(s)]
            mean, std = mean_and_std(vals) if vals else (float("nan"), float("nan"))
            out[model][c] = {"mean": round(mean, 4), "std": round(std, 4), "n_tasks": len(vals)}
    return out


def markdown(rows: list[dict]) -> str:
    """Per model: tasks x conditions (score), then mean ± std."""
    lines: list[str] = []
    order = [c for c in cond.CONDITIONS if any(r["condition"] == c for r in rows)]
    summary = summarize(rows)
    for model in dict.fromkeys(r["model"] for r in rows if r["condition"] != "soft_prompt"):
        cols = order
        lines += [f"### target {model}", "", "| task | metric | " + " | ".join(cols) + " |",
                  "|---|---|" + "---:|" * len(cols)]
        for task in dict.fromkeys(r["task"] for r in rows):
            cells, metric = [], ""
            for c in cols:
                hit = [r for r in rows if r["task"] == task and r["condition"] == c
                       and (r["model"] == model or c == "soft_prompt")]
                metric = metric or (hit[0]["metric"] if hit else "")
                cells.append(f"{hit[0]['score']:.3f}" if hit else "–")
            lines.append(f"| {task} | {metric} | " + " | ".join(cells) + " |")
        means = []
        for c in cols:
            m = summary.get(model if c != "soft_prompt" else _source_model(rows), {}).get(c)
            means.append(f"**{m['mean']:.3f}** ± {m['std']:.3f}" if m else "–")
        lines += ["| **mean ± std** | | " + " | ".join(means) + " |", ""]
    seen = sorted({(r["task"], r["condition"]) for r in rows if r.get("seen_in_training")})
    if seen:
        lines += ["Not held out (seen_in_training): " + ", ".join(f"{c} on {t}" for t, c in seen)
                  + " - the interpreter's calibration or training set included a prompt of that task.", ""]
    return "\n".join(lines)


def _source_model(rows: list[dict]) -> str:
    return next((r["model"] for r in rows if r["condition"] == "soft_prompt"), "")


def write_tables(out: Path, rows: list[dict], settings: dict) -> None:
    # provenance stays out of settings.json, which a rerun compares: a newer version still resumes the folder
    atomic.write_json(out / "summary.json", {"settings": settings, "by_model": summarize(rows),
                                             "provenance": provenance()})
    buf = io.StringIO()
    fields = ["task", "answer_type", "condition", "model", "metric", "score", "exact_match", "rouge_l", "n",
              *ROW_TEXT_FIELDS, "instruction"]
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    for r in rows:
        writer.writerow({**r, "degenerate": ";".join(r.get("degenerate") or [])})
    atomic.write_text(out / "results.csv", buf.getvalue())
    atomic.write_text(out / "results.md", markdown(rows))
