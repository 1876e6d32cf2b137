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
from soft2hard.bias.probe import cue_mention_rate, demo_copy_rate, elaborated_config, elicited_features, probe
from soft2hard.lm import LanguageModel
from soft2hard.metrics import pearson, spearman
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
    if row_file.exists():
        return json.loads(row_file.read_text())
    target = target_label or task.labels[0]
    biased = build_biased_task(task, cue, target, rate, seed=cfg.seed, cue_fraction=cfg.cue_fraction)
    result = tune(lm, biased.train, replace(cfg.tuning, seed=cfg.seed), out / "runs" / slug, resume=True,
                  progress=progress)
    prompt = result.prompt.tensor.to(lm.device)
    bias = biased_prediction_rate(lm, prompt, biased, cfg.max_test_examples)
    probe_cfg = elaborated_config(**({"source_layers": cfg.layers, "target_layers": cfg.layers} if cfg.layers else {}))
    descs = probe(lm, prompt, probe_cfg)
    row = {"task": task.name, "cue": cue.label(), "cue_kind": cue.kind, "rate": rate, "target_label": target,
           "train_accuracy_test": result.metrics["test_score"], **bias,
           "cue_mention_rate": cue_mention_rate(descs, cue), "demo_copy_rate": demo_copy_rate(descs),
           "features": elicited_features(descs, top=10), "n_pairs": len(descs)}
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
    """Correlation of flip rate with cue mention rate: over all prompts and within each (task, cue)."""
    def corr(sel: list[dict]) -> dict:
        x = [r["flip_rate"] for r in sel]
        y = [r["cue_mention_rate"] for r in sel]
        return {"n": len(sel), "pearson": pearson(x, y), "spearman": spearman(x, y)}

    groups = sorted({(r["task"], r["cue"]) for r in rows})
    return {"all": corr(rows), "by_task_cue": {f"{t} | {c}": corr([r for r in rows if (r["task"], r["cue"]) == (t, c)])
                                               for t, c in groups}}


def study_markdown(rows: list[dict], summary: dict) -> str:
    lines = ["| task | cue | rate | accuracy (clean) | flip rate | cue mention rate | demo copies | top features |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        feats = ", ".join(f for f, _ in r["features"][:5]).replace("|", "\\|")
        lines.append(f"| {r['task']} | `{r['cue']}` | {r['rate']:g} | {r['accuracy_clean']:.2f} | {r['flip_rate']:.2f} | "
                     f"{r['cue_mention_rate']:.3f} | {r['demo_copy_rate']:.2f} | {feats} |")
    a = summary["all"]
    lines += ["", f"Correlation of flip rate with cue mention rate over {a['n']} prompts: Pearson {a['pearson']:.3f}, "
                  f"Spearman {a['spearman']:.3f}.", ""]
    for k, v in summary["by_task_cue"].items():
        lines.append(f"- {k}: Pearson {v['pearson']:.3f}, Spearman {v['spearman']:.3f} (n={v['n']})")
    return "\n".join(lines) + "\n"
