"""One self-contained HTML report of an evaluation folder (the output of ``soft2hard evaluate``).

Reads ``results.json`` (required) and, when present, ``summary.json``, ``texts.json`` and ``predictions.json``;
writes a single HTML file with inline CSS and inline base64 PNG plots (matplotlib, Agg): no scripts and no
external resources. Every string that comes from a file is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from soft2hard.atomic import read_json, write_text
from soft2hard.errors import Soft2HardError
from soft2hard.evaluation.conditions import CONDITIONS
from soft2hard.metrics import mean_and_std

TITLE = "soft2hard evaluation"
CONDITION_ORDER = CONDITIONS  # the report lists conditions in the evaluation's own order
REQUIRED = ("task", "condition", "model", "score")
N_EXAMPLES = 3
MAX_CHARS = 2000
DASH = "\u2013"
CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}
h1{margin-bottom:.2em} h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.6em 0 1.2em} th,td{border:1px solid #ccc;padding:.25em .6em}
th{background:#f3f3f3;text-align:left} td.num{text-align:right;font-variant-numeric:tabular-nums}
td.best{background:#d8f5d0;font-weight:bold} .metric{color:#777;font-size:.8em;font-weight:normal}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(260px,1fr));gap:.8em;margin-bottom:1.5em}
.card{border:1px solid #ccc;border-radius:4px;padding:.5em .7em;background:#fafafa}
.card.ref{background:#eef4ff} .card h4{margin:0 0 .3em}
pre,.text{white-space:pre-wrap;word-break:break-word;font-family:ui-monospace,monospace;font-size:.85em;margin:0}
.stats{color:#555;font-size:.8em;margin-top:.4em} img{max-width:100%;display:block;margin:.5em 0}
details{margin:1em 0} summary{cursor:pointer;font-weight:bold} .note{color:#777}
.seen{color:#a05a00;font-size:.8em;font-weight:normal}
"""
SEEN = "seen in training"
SEEN_NOTE = ("<b>seen in training</b>: the interpreter (InSPEcT profile or translator) was calibrated or trained on "
             "a prompt of this task, so the score is not a held-out score.")


def _e(value: Any) -> str:
    """HTML-escape anything (quotes included)."""
    return html.escape(str(value), quote=True)


def _num(value: Any) -> float:
    """A finite float, or NaN for null / NaN / inf / anything non-numeric."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return math.nan
    return float(value) if math.isfinite(value) else math.nan


def _fmt(value: Any, digits: int = 3) -> str:
    x = _num(value)
    return DASH if math.isnan(x) else f"{x:.{digits}f}"


def _order(conditions: set[str] | list[str]) -> list[str]:
    """Known conditions in their canonical order, then the rest alphabetically."""
    known = [c for c in CONDITION_ORDER if c in conditions]
    return known + sorted(c for c in conditions if c not in CONDITION_ORDER)


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


# ----------------------------------------------------------------------------------------------- loading


def _load_rows(path: Path) -> list[dict]:
    rows = read_json(path)
    if not isinstance(rows, list):
        raise Soft2HardError(f"{path}: expected a list of result rows, got {type(rows).__name__}")
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise Soft2HardError(f"{path}: row {i} is not an object")
        missing = [k for k in REQUIRED if k not in row]
        if missing:
            raise Soft2HardError(f"{path}: row {i} is missing field(s) {', '.join(missing)}")
        score = row["score"]
        if score is not None and (isinstance(score, bool) or not isinstance(score, int | float)):
            raise Soft2HardError(f"{path}: row {i} has a non-numeric score {score!r}")
    return rows


def _load_optional(path: Path) -> dict | None:
    if not path.exists():
        return None
    data = read_json(path)
    if not isinstance(data, dict):
        raise Soft2HardError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


# ----------------------------------------------------------------------------------------------- plots


def _mpl(text: Any, limit: int = 40) -> str:
    """Text safe for matplotlib (no mathtext), shortened to ``limit`` characters."""
    text = str(text)
    if len(text) > limit:
        text = text[: limit - 1] + "\u2026"
    return text.replace("$", r"\$")


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Figure, alt: str) -> str:
    """The figure as an ``<img>`` with a base64 PNG data URI."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _bars(model: str, tasks: list[str], conditions: list[str], score: dict[tuple[str, str], float]) -> str:
    """Grouped bars: tasks on x, one bar per condition."""
    fig = _figure(min(18.0, max(4.0, 1.0 + 0.22 * len(tasks) * max(1, len(conditions)))) + 1.6, 3.8)
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(conditions))
    x = np.arange(len(tasks))
    for j, cond in enumerate(conditions):
        ys = [score.get((t, cond), math.nan) for t in tasks]
        ax.bar(x + (j - (len(conditions) - 1) / 2) * width, np.nan_to_num(ys), width, label=_mpl(cond))
    ax.set_xticks(x, [_mpl(t, 28) for t in tasks], rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("score")
    ax.set_ylim(0, 1.05)
    ax.set_title(_mpl(f"score per task and condition: {model}", 80), fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _png(fig, f"condition comparison per task for {model}")


def _means(stats: dict[str, dict[str, tuple[float, float, int]]], conditions: list[str]) -> str:
    """Mean score per condition with std error bars, one series per model."""
    fig = _figure(max(5.0, 1.5 + 0.8 * len(conditions)), 3.6)
    ax = fig.add_subplot()
    x = np.arange(len(conditions))
    models = list(stats)
    for k, model in enumerate(models):
        offset = (k - (len(models) - 1) / 2) * 0.12
        mean = [stats[model].get(c, (math.nan, math.nan, 0))[0] for c in conditions]
        std = [stats[model].get(c, (math.nan, math.nan, 0))[1] for c in conditions]
        ax.errorbar(x + offset, mean, yerr=np.nan_to_num(std), fmt="o", capsize=3, label=_mpl(model))
    ax.set_xticks(x, [_mpl(c) for c in conditions], rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("mean score over tasks")
    ax.set_ylim(-0.05, 1.05)
    ax.set_title("mean score per condition (error bars: std over tasks)", fontsize=9)
    ax.legend(fontsize=7)
    return _png(fig, "mean score per condition")


def _heatmap(task: str, grid: Any) -> str:
    """InSPEcT ROUGE-L per (source, target) layer pair; the best cell marked."""
    if not isinstance(grid, dict):
        return '<p class="note">inspect_grid is malformed; skipped.</p>'
    layers = grid.get("layers")
    try:
        values = np.array([[_num(v) for v in row] for row in grid.get("rouge_l")], dtype=float)
    except (TypeError, ValueError):
        values = np.zeros((0, 0))
    if not isinstance(layers, list) or values.shape != (len(layers), len(layers)) or not layers:
        return '<p class="note">inspect_grid is malformed (needs len(layers) x len(layers) rouge_l); skipped.</p>'
    best = grid.get("best")
    if not (isinstance(best, list) and len(best) == 2 and all(b in layers for b in best)):
        best = None
        if np.isfinite(values).any():
            s, t = np.unravel_index(np.nanargmax(values), values.shape)
            best = [layers[s], layers[t]]
    fig = _figure(1.8 + 0.35 * len(layers), 1.4 + 0.32 * len(layers))
    ax = fig.add_subplot()
    im = ax.imshow(values, origin="lower", aspect="auto", cmap="viridis")
    ticks = [_mpl(v) for v in layers]
    ax.set_xticks(range(len(layers)), ticks, fontsize=7)
    ax.set_yticks(range(len(layers)), ticks, fontsize=7)
    ax.set_xlabel("target layer (patched)")
    ax.set_ylabel("source layer (read)")
    if best is not None:
        ax.plot([layers.index(best[1])], [layers.index(best[0])], marker="*", color="red", markersize=12)
    ax.set_title(_mpl(f"InSPEcT ROUGE-L: {task}", 48), fontsize=8)
    fig.colorbar(im, ax=ax, label="ROUGE-L")
    caption = "" if best is None else f'<p class="note">best: source {_e(best[0])}, target {_e(best[1])}</p>'
    return _png(fig, f"InSPEcT layer heatmap for {task}") + caption


# ----------------------------------------------------------------------------------------------- sections


def _stats(rows: list[dict]) -> dict[str, dict[str, tuple[float, float, int]]]:
    """model -> condition -> (mean, sample std over tasks, n_tasks with a finite score), as in summary.json."""
    per: dict[str, dict[str, dict[str, float]]] = {}
    for r in rows:
        per.setdefault(str(r["model"]), {}).setdefault(str(r["condition"]), {})[str(r["task"])] = _num(r["score"])
    out: dict[str, dict[str, tuple[float, float, int]]] = {}
    for model, by_cond in per.items():
        out[model] = {}
        for cond in _order(set(by_cond)):
            vals = [v for v in by_cond[cond].values() if not math.isnan(v)]
            mean, std = mean_and_std(vals)
            out[model][cond] = (mean, std, len(vals))
    return out


def _header(rows: list[dict], summary: dict | None) -> str:
    sources = _unique([str(r["model"]) for r in rows if r["condition"] == "soft_prompt"])
    targets = _unique([str(r["model"]) for r in rows if str(r["model"]) not in sources])
    parts = [f"<h1>{_e(TITLE)}</h1>",
             f"<p><b>source model:</b> {_e(', '.join(sources) or DASH)} &nbsp; "
             f"<b>target model(s):</b> {_e(', '.join(targets) or DASH)} &nbsp; "
             f"<b>tasks:</b> {len({str(r['task']) for r in rows})} &nbsp; <b>rows:</b> {len(rows)}</p>"]
    settings = (summary or {}).get("settings")
    if isinstance(settings, dict) and settings:
        cells = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v if isinstance(v, str) else json.dumps(v))}</td></tr>"
                        for k, v in settings.items())
        parts.append(f'<h2 id="settings">Settings</h2><table class="settings">{cells}</table>')
    written = (summary or {}).get("provenance")
    if isinstance(written, dict) and written:
        versions = ", ".join(f"{k} {v}" for k, v in written.items() if v is not None)
        parts.append(f'<p class="note provenance"><b>written by:</b> {_e(versions)}</p>')
    return "\n".join(parts)


def _summary(stats: dict[str, dict[str, tuple[float, float, int]]]) -> str:
    body = []
    for model, by_cond in stats.items():
        for cond, (mean, std, n) in by_cond.items():
            cell = DASH if n == 0 else f"{mean:.3f} &plusmn; {std:.3f}"
            body.append(f"<tr><td>{_e(model)}</td><td>{_e(cond)}</td><td class=\"num\">{cell}</td>"
                        f"<td class=\"num\">{n}</td></tr>")
    return ('<h2 id="summary">Summary</h2><p class="note">mean &plusmn; std of the score over tasks '
            "(from results.json; NaN scores left out).</p><table class=\"summary\"><tr><th>model</th>"
            f"<th>condition</th><th>mean &plusmn; std</th><th>n_tasks</th></tr>{''.join(body)}</table>")


def _per_task(rows: list[dict]) -> str:
    parts = ['<h2 id="per-task">Per-task scores</h2><p class="note">Each target table repeats the soft prompt '
             "on its source model (column soft_prompt) for comparison.</p>"]
    source_rows = [r for r in rows if r["condition"] == "soft_prompt"]
    targets = _unique([str(r["model"]) for r in rows if r["condition"] != "soft_prompt"])
    for model in targets or _unique([str(r["model"]) for r in source_rows]):
        mine = [r for r in rows if str(r["model"]) == model] + [r for r in source_rows if str(r["model"]) != model]
        tasks = _unique([str(r["task"]) for r in mine])
        conds = _order({str(r["condition"]) for r in mine})
        cell = {(str(r["task"]), str(r["condition"])): r for r in mine}
        head = "".join(f"<th>{_e(c)}</th>" for c in conds)
        lines = []
        for t in tasks:
            scores = [_num(cell[(t, c)]["score"]) if (t, c) in cell else math.nan for c in conds]
            top = max((s for s in scores if not math.isnan(s)), default=math.nan)
            tds = []
            for c, s in zip(conds, scores):
                if (t, c) not in cell:
                    tds.append('<td class="num"></td>')
                    continue
                cls = "num best" if not math.isnan(top) and s == top else "num"
                metric = cell[(t, c)].get("metric")
                tag = f' <span class="metric">{_e(metric)}</span>' if metric else ""
                tag += f' <span class="seen">{SEEN}</span>' if cell[(t, c)].get("seen_in_training") else ""
                tds.append(f'<td class="{cls}">{_fmt(s)}{tag}</td>')
            lines.append(f"<tr><th>{_e(t)}</th>{''.join(tds)}</tr>")
        score = {(t, c): _num(r["score"]) for (t, c), r in cell.items()}
        seen = any(r.get("seen_in_training") for r in mine)
        parts.append(f"<h3>{_e(model)}</h3><table class=\"per-task\"><tr><th>task</th>{head}</tr>"
                     f"{''.join(lines)}</table>" + (f'<p class="note">{SEEN_NOTE}</p>' if seen else "")
                     + _bars(model, tasks, conds, score))
    return "\n".join(parts)


def _card(title: str, text: Any, entry: dict, cls: str = "card") -> str:
    stats = [f"{k} {_fmt(entry[k])}" for k in ("perplexity", "faithfulness") if not math.isnan(_num(entry.get(k)))]
    if entry.get("selected"):  # translator_selected: which candidate won, and whether it beat no text
        verdict = "verified" if entry.get("verified") else "NOT verified: no text sent"
        if entry.get("verified_by") == "kl":
            verdict = "verified by a lower KL only"
        stats.append(f"selected {entry['selected']} ({verdict}; agreement {_fmt(entry.get('selection_agreement'))} "
                     f"on {entry.get('selection_inputs')} validation inputs)")
    if entry.get("inducer"):
        stats.append(f"induced by {entry['inducer']} from {entry.get('n_demos')} demos")
    extra = f'<div class="stats">{_e(", ".join(stats))}</div>' if stats else ""
    seen = f' <span class="seen">{SEEN}</span>' if entry.get("seen_in_training") else ""
    return f'<div class="{cls}"><h4>{_e(title)}{seen}</h4><div class="text">{_e(text)}</div>{extra}</div>'


def _texts(texts: dict) -> str:
    parts = ['<h2 id="descriptions">Descriptions side by side</h2>']
    for task, entry in texts.items():
        if not isinstance(entry, dict):
            continue
        cards = []
        if entry.get("reference") is not None and "reference" not in (entry.get("texts") or {}):
            cards.append(_card("reference", entry["reference"], {}, "card ref"))
        conds = entry.get("texts") if isinstance(entry.get("texts"), dict) else {}
        for cond in _order(set(conds)):
            item = conds[cond] if isinstance(conds[cond], dict) else {"text": conds[cond]}
            cards.append(_card(cond, item.get("text", ""), item))
        kind = f' <span class="metric">{_e(entry["answer_type"])}</span>' if entry.get("answer_type") else ""
        parts.append(f"<h3>{_e(task)}{kind}</h3><div class=\"cards\">{''.join(cards)}</div>")
    grids = [(t, e["inspect_grid"]) for t, e in texts.items() if isinstance(e, dict) and "inspect_grid" in e]
    if grids:
        parts.append('<h2 id="inspect">InSPEcT layer heatmaps</h2>')
        parts += [f"<h3>{_e(t)}</h3>{_heatmap(t, g)}" for t, g in grids]
    return "\n".join(parts)


def _clip(text: Any) -> str:
    s = str(text)
    return s if len(s) <= MAX_CHARS else s[:MAX_CHARS] + " \u2026"


def _predictions(preds: dict) -> str:
    blocks = []
    for key, items in preds.items():
        parts = str(key).split("|")
        label = (f"{parts[0]} | {'|'.join(parts[1:-1])} | {parts[-1]}" if len(parts) >= 3 else str(key))
        if not isinstance(items, list):
            continue
        trs = "".join(f"<tr><td><pre>{_e(_clip(it.get('input', '')))}</pre></td><td><pre>"
                      f"{_e(_clip(it.get('gold', '')))}</pre></td><td><pre>{_e(_clip(it.get('output', '')))}"
                      "</pre></td></tr>" for it in items[:N_EXAMPLES] if isinstance(it, dict))
        blocks.append(f"<h4>{_e(label)}</h4><table class=\"predictions\"><tr><th>input</th><th>gold</th>"
                      f"<th>output</th></tr>{trs}</table>")
    return (f'<h2 id="predictions">Example predictions</h2><details><summary>first {N_EXAMPLES} predictions per '
            f"model | task | condition ({len(blocks)} groups)</summary>{''.join(blocks)}</details>")


def render(rows: list[dict], summary: dict | None = None, texts: dict | None = None,
           predictions: dict | None = None) -> str:
    """The report's HTML from already-loaded evaluation files."""
    stats = _stats(rows)
    conds = _order({str(r["condition"]) for r in rows})
    body = [_header(rows, summary), _summary(stats), '<h2 id="plots">Mean score per condition</h2>',
            _means(stats, conds) if rows else '<p class="note">no results.</p>', _per_task(rows)]
    if texts:
        body.append(_texts(texts))
    if predictions:
        body.append(_predictions(predictions))
    csp = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta http-equiv=\"Content-Security-Policy\" content=\"{csp}\">"
            f"<title>{_e(TITLE)}</title><style>{CSS}</style></head>\n<body>\n" + "\n".join(body)
            + "\n</body></html>\n")


def write_report(results_dir: Path, out: Path | None = None) -> Path:
    """Render the evaluation folder ``results_dir`` into one HTML file (default ``results_dir/report.html``)."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise Soft2HardError(f"{results_dir / 'results.json'}: file not found (no evaluation folder {results_dir})")
    rows = _load_rows(results_dir / "results.json")
    summary = _load_optional(results_dir / "summary.json")
    texts = _load_optional(results_dir / "texts.json")
    predictions = _load_optional(results_dir / "predictions.json")
    path = Path(out) if out is not None else results_dir / "report.html"
    write_text(path, render(rows, summary, texts, predictions))
    return path
