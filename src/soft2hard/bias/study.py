"""The bias study: soft prompts trained at several cue rates -> biased predictions vs cue mentions.

For every (base task, cue, rate): build the biased training set (``cues.build_biased_task``), tune a soft prompt
on it, measure how often adding the cue flips a prediction to the cue's label (``biased_prediction_rate``),
and run the elaborated probe over a layer grid to see how often the cue is named (``probe.cue_mention_rate``).
Each combination is one resumable ``tune`` run plus one row file; a rerun skips finished rows. The summary
correlates flip rate with mention rate across all prompts (Pearson and Spearman), as METHODS.md §3.6 asks.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from tqdm.auto import tqdm

from soft2hard import atomic
from soft2hard.bias.cues import Cue, biased_prediction_rate, build_biased_task
from soft2hard.bias.probe import (
    cue_logprob,
    cue_mention_rate,
    demo_copy_rate,
    elaborated_config,
    elicited_features,
    probe,
)
from soft2hard.lm import LanguageModel
from soft2hard.metrics import pearson, spearman
from soft2hard.prompts import SoftPrompt
from soft2hard.tasks.base import Task
from soft2hard.tuning import TuningConfig, tune

logger = logging.getLogger(__name__)


@dataclass
class StudyConfig:
    rates: tuple[float, ...] = (0.0, 0.5, 0.9, 1.0)
    cue_fraction: float = 0.4
    seed: int = 0
    layers: tuple[int, ...] | None = None  # probe grid (sources = targets); None: InSPEcT's default grid
    max_test_examples: int = 100
    tuning: TuningConfig = field(default_factory=lambda: TuningConfig(steps=100, eval_every=50))


def _slug(task: Task, cue: Cue, rate: float) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{task.name}__{cue.label()}__{rate:g}")


def study_row(lm: LanguageModel, task: Task, cue: Cue, rate: float, cfg: StudyConfig, out: Path,
              target_label: str | None = None, progress: bool = False) -> dict:
    """One (task, cue, rate) cell: tune (resumable), bias score, elaborated probe; cached in ``rows/``."""
    slug = _slug(task, cue, rate)
    row_file = out / "rows" / f"{slug}.json"
    probe_cfg = elaborated_config(**({"source_layers": cfg.layers, "target_layers": cfg.layers} if cfg.layers else {}))
    row = json.loads(row_file.read_text()) if row_file.exists() else None
    if row is None:
        target = target_label or task.labels[0]
        biased = build_biased_task(task, cue, target, rate, seed=cfg.seed, cue_fraction=cfg.cue_fraction)
        result = tune(lm, biased.train, replace(cfg.tuning, seed=cfg.seed), out / "runs" / slug, resume=True,
                      progress=progress)
        prompt = result.prompt.tensor.to(lm.device)
        bias = biased_prediction_rate(lm, prompt, biased, cfg.max_test_examples)
        descs = probe(lm, prompt, probe_cfg)
        row = {"task": task.name, "cue": cue.label(), "cue_kind": cue.kind, "rate": rate, "target_label": target,
               "train_accuracy_test": result.metrics["test_score"], **bias,
               "cue_mention_rate": cue_mention_rate(descs, cue), "demo_copy_rate": demo_copy_rate(descs),
               "features": elicited_features(descs, top=10), "n_pairs": len(descs)}
    elif "cue_logprob" in row:
        return row
    prompt = SoftPrompt.load(out / "runs" / slug).tensor.to(lm.device)  # rows of earlier versions lack it
    row["cue_logprob"] = cue_logprob(lm, prompt, cue, task.labels, probe_cfg)
    atomic.write_json(row_file, row)
    return row


def run_study(lm: LanguageModel, tasks: list[Task], cues: list[Cue], cfg: StudyConfig, out: Path,
              progress: bool = True) -> tuple[list[dict], dict]:
    out = Path(out)
    atomic.write_json(out / "study_config.json", {**asdict(replace(cfg, tuning=None)), "tuning": asdict(cfg.tuning),
                                                  "tasks": [t.name for t in tasks], "cues": [c.label() for c in cues]})
    cells = [(t, c, r) for t in tasks for c in cues for r in cfg.rates]
    rows = [study_row(lm, t, c, r, cfg, out) for t, c, r in tqdm(cells, desc="bias study", disable=not progress)]
    summary = summarize(rows)
    atomic.write_json(out / "study.json", {"rows": rows, "summary": summary})
    atomic.write_text(out / "study.md", study_markdown(rows, summary))
    from soft2hard.plots import bias_scatter

    bias_scatter(rows, out / "study.png")
    return rows, summary


def summarize(rows: list[dict]) -> dict:
    """Correlation of flip rate with the cue mention rate and with the cue log-probability: over all prompts and
    within each (task, cue)."""
    def corr(sel: list[dict]) -> dict:
        x = [r["flip_rate"] for r in sel]
        out = {"n": len(sel)}
        for measure in ("cue_mention_rate", "cue_logprob"):
            y = [r[measure] for r in sel]
            out[measure] = {"pearson": pearson(x, y), "spearman": spearman(x, y)}
        return out

    groups = sorted({(r["task"], r["cue"]) for r in rows})
    return {"all": corr(rows), "by_task_cue": {f"{t} | {c}": corr([r for r in rows if (r["task"], r["cue"]) == (t, c)])
                                               for t, c in groups}}


def study_markdown(rows: list[dict], summary: dict) -> str:
    lines = ["| task | cue | rate | accuracy (clean) | flip rate | cue mention rate | cue log-prob | demo copies | "
             "top features |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        feats = ", ".join(f for f, _ in r["features"][:5]).replace("|", "\\|")
        lines.append(f"| {r['task']} | `{r['cue']}` | {r['rate']:g} | {r['accuracy_clean']:.2f} | {r['flip_rate']:.2f} | "
                     f"{r['cue_mention_rate']:.3f} | {r['cue_logprob']:.2f} | {r['demo_copy_rate']:.2f} | {feats} |")
    lines.append("")
    for name, c in [("all prompts", summary["all"]), *summary["by_task_cue"].items()]:
        m, lp = c["cue_mention_rate"], c["cue_logprob"]
        lines.append(f"- {name} (n={c['n']}): flip rate vs mention rate Pearson {m['pearson']:.3f} / Spearman "
                     f"{m['spearman']:.3f}; vs cue log-prob Pearson {lp['pearson']:.3f} / Spearman {lp['spearman']:.3f}")
    return "\n".join(lines) + "\n"
