"""Plots (matplotlib, headless). Only this module and the report draw."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from soft2hard.interpret.base import Description  # noqa: E402


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def layer_heatmap(descriptions: list[Description], path: Path, title: str = "", metric: str = "score") -> Path:
    """Score of each (source, target) pair as a heatmap; sources on y, targets on x."""
    scored = [d for d in descriptions if d.layers is not None and d.score is not None]
    sources = sorted({d.layers[0] for d in scored})
    targets = sorted({d.layers[1] for d in scored})
    grid = np.full((len(sources), len(targets)), np.nan)
    for d in scored:
        grid[sources.index(d.layers[0]), targets.index(d.layers[1])] = d.score
    fig, ax = plt.subplots(figsize=(1.2 + 0.28 * len(targets), 1.0 + 0.28 * len(sources)))
    im = ax.imshow(grid, origin="lower", aspect="auto", cmap="viridis")
    ax.set_xticks(range(len(targets)), [str(t) for t in targets], fontsize=7)
    ax.set_yticks(range(len(sources)), [str(s) for s in sources], fontsize=7)
    ax.set_xlabel("target layer (patched)")
    ax.set_ylabel("source layer (read)")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, label=metric)
    return _save(fig, path)


def sweep_plot(rows: list[dict], path: Path, title: str = "") -> Path:
    """Task score, faithfulness agreement (when measured) and log-perplexity against the interpretability weight;
    degenerate prompts are marked with an x."""
    weights = [r["weight"] for r in rows]
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    ax.plot(weights, [r["test_score"] for r in rows], "o-", label="test score")
    if any("faithfulness_agreement" in r for r in rows):
        ax.plot(weights, [r.get("faithfulness_agreement", np.nan) for r in rows], "s--", label="agreement with soft prompt")
    ax.set_xlabel("interpretability weight")
    ax.set_ylabel("score")
    ax.set_ylim(-0.02, 1.02)
    ax2 = ax.twinx()
    ax2.plot(weights, [np.log(r["perplexity"]) for r in rows], "^:", color="tab:red", label="log perplexity")
    ax2.set_ylabel("log perplexity", color="tab:red")
    for r in rows:
        if r["degenerate"]:
            ax2.plot([r["weight"]], [np.log(r["perplexity"])], "x", color="black", markersize=10)
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=7, loc="best")
    ax.set_title(title, fontsize=9)
    return _save(fig, path)


def bias_scatter(rows: list[dict], path: Path, title: str = "biased predictions vs the elaborated probe") -> Path:
    """One point per soft prompt: flip rate (x) against the probe's cue mention rate and, when measured, the cue
    log-probability (y, one panel each); the marker is the cue kind and the label the training rate."""
    measures = [m for m in ("cue_mention_rate", "cue_logprob") if all(m in r for r in rows)]
    fig, axes = plt.subplots(1, len(measures), figsize=(4.6 * len(measures), 3.8), squeeze=False)
    markers = {"word": "o", "name": "s", "punctuation": "^"}
    for ax, measure in zip(axes[0], measures):
        for kind in sorted({r["cue_kind"] for r in rows}):
            sel = [r for r in rows if r["cue_kind"] == kind]
            ax.scatter([r["flip_rate"] for r in sel], [r[measure] for r in sel], marker=markers.get(kind, "o"),
                       label=kind, alpha=0.8)
            for r in sel:
                ax.annotate(f"{r['rate']:g}", (r["flip_rate"], r[measure]), fontsize=6, alpha=0.7)
        ax.set_xlabel("biased prediction (flip) rate")
        ax.set_ylabel(measure.replace("_", " "))
        ax.legend(fontsize=7, title="cue", title_fontsize=7)
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def learning_curve(points: dict[str, list[tuple[int, float]]], path: Path, ylabel: str = "score",
                   title: str = "held-out quality vs training tasks") -> Path:
    """One line per series (name -> [(training tasks, score)]), x on a log scale."""
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    for name, pts in points.items():
        pts = sorted(pts)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
    ax.set_xscale("log")
    ax.set_xlabel("training tasks")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)
