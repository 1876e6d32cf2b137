"""The interpretability/accuracy trade-off: one optimizer run per interpretability weight, side by side.

``run_sweep`` runs PEZ (weight = fluency weight w) or RLPrompt (weight = perplexity penalty lambda) once per
weight into ``out/w_<weight>/`` (each resumable), then tabulates task accuracy, faithfulness to a reference
soft prompt (when one is given: agreement and mean KL between the model with the soft prompt and with the hard
prompt's text), perplexity, word validity and degenerate-prompt flags, and plots them against the weight.
"""

from __future__ import annotations

import logging
import math
from dataclasses import replace
from pathlib import Path

import torch

from soft2hard import atomic, runs
from soft2hard.faithfulness import faithfulness
from soft2hard.lm import LanguageModel
from soft2hard.optimize import OptimizedPrompt, PezConfig, RLPromptConfig, run_one
from soft2hard.tasks.base import Task

logger = logging.getLogger(__name__)
def finished_with(run_dir: Path, resolved: dict) -> bool:
    """Whether ``run_dir`` holds a finished run with exactly these settings (reused as is by a sweep rerun)."""
    config = run_dir / "config.json"
    return (run_dir / "result.json").exists() and config.exists() and atomic.read_json(config) == resolved


def sweep_row(lm: LanguageModel, task: Task, method: str, weight: float, result: OptimizedPrompt,
              soft_prompt: torch.Tensor | None, seed: int, max_examples: int = 64) -> dict:
    row = {"method": method, "weight": weight, "text": result.text, "ids": result.ids,
           "test_score": result.test_score, "validation_score": result.validation_score,
           "perplexity": result.perplexity, "word_validity": result.word_validity,
           "degenerate": result.degenerate}
    if soft_prompt is not None:
        examples = task.splits(seed=seed).test[:max_examples]
        row.update({f"faithfulness_{k}": v for k, v in faithfulness(lm, soft_prompt.to(lm.device), result.text,
                                                                       task, examples).items()})
    return row


def run_sweep(lm: LanguageModel, task: Task, method: str, weights: list[float], cfg: PezConfig | RLPromptConfig,
              out: Path, soft_prompt: torch.Tensor | None = None, progress: bool = True) -> list[dict]:
    """Run (or resume) every weight, then write ``sweep.json``, ``sweep.md`` and ``sweep.png`` into ``out``."""
    out = Path(out)
    rows = []
    for w in weights:
        run_dir = out / f"w_{w:g}"
        wcfg = replace(cfg, weight=w)
        if finished_with(run_dir, runs.settings(lm.name, task.name, wcfg, method=method)):
            result = OptimizedPrompt.from_dict(atomic.read_json(run_dir / "result.json"))  # fill in what is missing
        else:  # resume refuses other settings; more --steps continue a finished run
            result = run_one(lm, task, method, wcfg, run_dir, resume=True, progress=progress)
        rows.append(sweep_row(lm, task, method, w, result, soft_prompt, cfg.seed))
        logger.info("weight %g: score %.3f, perplexity %.1f, %r", w, result.test_score, result.perplexity, result.text)
    atomic.write_json(out / "sweep.json", rows)
    atomic.write_text(out / "sweep.md", sweep_markdown(rows, task.name))
    from soft2hard.plots import sweep_plot

    sweep_plot(rows, out / "sweep.png", title=f"{method} on {task.name}")
    return rows


def sweep_markdown(rows: list[dict], task: str) -> str:
    faithful = any("faithfulness_agreement" in r for r in rows)
    head = "| weight | test score | " + ("agreement | KL | " if faithful else "") + "perplexity | words | flags | text |"
    lines = [f"Task `{task}`, method {rows[0]['method'] if rows else '?'}", "", head,
             "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        cells = [f"{r['weight']:g}", f"{r['test_score']:.3f}"]
        if faithful:
            cells += [f"{r.get('faithfulness_agreement', math.nan):.3f}", f"{r.get('faithfulness_mean_kl', math.nan):.3f}"]
        text = r["text"].replace("|", "\\|").replace("\n", "\\n")
        cells += [f"{r['perplexity']:.1f}", f"{r['word_validity']:.2f}", ", ".join(r["degenerate"]) or "-",
                  f"`{text}`"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
