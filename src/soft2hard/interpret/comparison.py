"""The interpreters compared on a DoD's held-out tasks: projection, InSPEcT (label-free and ORACLE), translator.

Each clean held-out task contributes its best prompt (first seed); held-out tasks that leak into training
(:meth:`Manifest.clean_heldout`: labels named in training references, a template family shared with training
tasks) are left out with a logged note. Every method's text is scored against the task's
reference with ROUGE-L and MiniLM cosine; for classification tasks also class rate, label precision and F1
(candidates: every label of the DoD, so naming a wrong category costs precision). Oracle InSPEcT picks, per
prompt, the layer pair whose text scores best against the reference (ROUGE-L, or class rate for classifiers):
it is an upper bound for analysis, not a method a user without the answer could run.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from tqdm.auto import tqdm

from soft2hard import atomic
from soft2hard.interpret.registry import NAMES, InterpreterSettings, check_names, get_interpreter
from soft2hard.interpret.selection import parse_layers
from soft2hard.interpret.translator import KIND_CUE
from soft2hard.metrics import (
    class_rate,
    embedding_cosine,
    label_f1,
    label_precision,
    mean_and_std,
    rouge_l,
    similarity_matrix,
)
from soft2hard.tasks import categories, compositional

logger = logging.getLogger(__name__)
METHODS = NAMES  # every interpreter of the registry, in its order


def _best_prompt(manifest, task, bank_cache: dict):
    best = [e for e in task.prompts if e.best] or list(task.prompts)
    return manifest.load_prompt(best[0], bank_cache)


def compare_interpreters(manifest, translator_dir: Path | None, cache_dir: Path, device: str = "auto",
                         oracle_layers: str = "1-29:4", max_tasks: int | None = None, progress: bool = True,
                         methods: tuple[str, ...] = METHODS, profile_path: Path | None = None,
                         dtype: str = "float32", amp: str = "none") -> tuple[list[dict], dict]:
    """Rows (task x method) and a summary (kind x method -> mean, std) over the clean held-out tasks."""
    from soft2hard.models import load_model

    methods = tuple(n for n in NAMES if n in check_names(methods))  # rows in the registry's order
    plain = load_model(manifest.model, device=device, dtype=dtype, cache_dir=cache_dir, amp=amp)
    settings = InterpreterSettings(cache_dir=cache_dir, profile=profile_path, translator=translator_dir,
                                   load={"device": device, "dtype": dtype, "amp": amp})
    oracle = replace(settings, grid_layers=parse_layers(oracle_layers))  # the label-free one keeps its pairs
    interpreters = {m: get_interpreter(m, plain, oracle if m == "inspect_oracle" else settings) for m in methods}
    # leaking held-out tasks are no held-out test (issue 19); what leaks depends on what the translator trained on
    trained_on = interpreters["translator"].translator.training_tasks if "translator" in interpreters else None
    tasks = manifest.clean_heldout(trained_on=trained_on)[:max_tasks]
    candidates = sorted({label for t in manifest.tasks if t.labels for label in t.labels})
    bank_cache: dict = {}  # each bank file is read once, not once per task
    translated = (_translations(interpreters["translator"], manifest, tasks, bank_cache)
                  if "translator" in interpreters else {})
    rows: list[dict] = []
    for task in tqdm(tasks, desc="interpreter comparison", disable=not progress, dynamic_ncols=True):
        prompt = _best_prompt(manifest, task, bank_cache).to(plain.device)
        labels = task.labels if task.kind == "classification" else None
        reference = ", ".join(labels) if labels else task.reference  # what the labels cue is trained to say
        texts: dict[str, str] = {}
        extra: dict[str, dict] = {}
        for m, interp in interpreters.items():
            d = translated[task.name] if m == "translator" else \
                interp.describe(prompt, cue=KIND_CUE[task.kind], reference=reference, labels=labels)[0]
            texts[m] = d.text
            if d.layers:
                extra[m] = {"layers": list(d.layers)}
            if d.oracle:
                extra.setdefault(m, {})["oracle_metric"] = d.details["score_metric"]
            if interp.saw(task.name):  # held-out tasks, unless the artefacts came from elsewhere
                logger.warning("warning: %s's interpreter saw %s in its calibration/training set: not a held-out "
                               "result (seen_in_training: true)", m, task.name)
                extra.setdefault(m, {})["seen_in_training"] = True
        names = list(texts)
        cos = embedding_cosine([texts[m] for m in names], [reference] * len(names))
        for m, c in zip(names, cos):
            row = {"task": task.name, "kind": bucket(task), "method": m, "text": texts[m], "reference": reference,
                   "rouge_l": rouge_l([texts[m]], [reference])[0], "cosine": float(c),
                   "prompt_test_score": task.test_score, **extra.get(m, {})}
            if labels:
                row["class_rate"] = class_rate(texts[m], task.labels)
                row["label_precision"] = label_precision(texts[m], task.labels, candidates)
                row["label_f1"] = label_f1(texts[m], task.labels, candidates)
            rows.append(row)
    add_identification(rows)
    return rows, summarize(rows)


def _translations(interpreter, manifest, tasks, bank_cache: dict) -> dict:
    """Task name -> the translator's Description of its best prompt, decoded in batches (one per cue)."""
    out = {}
    for cue in sorted({KIND_CUE[t.kind] for t in tasks}):
        of_cue = [t for t in tasks if KIND_CUE[t.kind] == cue]
        prompts = [_best_prompt(manifest, t, bank_cache) for t in of_cue]
        descs = interpreter.translator.translate(prompts, cue=cue, max_new_tokens=interpreter.settings.max_new_tokens)
        out.update(zip((t.name for t in of_cue), descs))
    return out


def bucket(task) -> str:
    """The row's ``kind`` in results: the task kind, with compositional tasks apart (``general:comp``; word-level
    ``classification:comp`` and sentence-level ``classification:sentence``) and the ``cat/`` tasks of the larger
    category inventory apart (``classification:large``), so that the BIG-bench / ``cat/`` figures stay comparable
    with earlier banks."""
    if categories.of_large_inventory(task.name):
        return "classification:large"
    if not task.name.startswith(compositional.PREFIX):
        return task.kind
    if task.kind == "classification":
        return "classification:sentence" if compositional.level_of(task.name) == "sentence" else "classification:comp"
    return f"{task.kind}:comp"


def add_identification(rows: list[dict]) -> None:
    """Task identification: each row's ``id_rank`` is the rank (1 = nearest) of its own task's reference among the
    references of every evaluated task of its kind, by MiniLM cosine to the row's text. Ties count against it."""
    for kind in {r["kind"] for r in rows}:
        refs = {r["task"]: r["reference"] for r in rows if r["kind"] == kind}
        names = list(refs)
        for method in {r["method"] for r in rows if r["kind"] == kind}:
            sel = [r for r in rows if r["kind"] == kind and r["method"] == method]
            sims = similarity_matrix([r["text"] for r in sel], [refs[n] for n in names])
            for r, row_sims in zip(sel, sims):
                own = row_sims[names.index(r["task"])]
                r["id_rank"] = 1 + sum(1 for j, v in enumerate(row_sims) if v >= own and names[j] != r["task"])


def summarize(rows: list[dict]) -> dict:
    summary: dict = {}
    for kind in sorted({r["kind"] for r in rows}):
        summary[kind] = {}
        for method in METHODS:
            sel = [r for r in rows if r["kind"] == kind and r["method"] == method]
            if not sel:
                continue
            stats = {"n": len(sel)}
            for metric in ("rouge_l", "cosine", "class_rate", "label_precision", "label_f1"):
                values = [r[metric] for r in sel if metric in r]
                if values:
                    mean, std = mean_and_std(values)
                    stats[metric] = {"mean": round(mean, 4), "std": round(std, 4)}
            ranks = [r["id_rank"] for r in sel if "id_rank" in r]
            for k in (1, 5):
                if ranks:
                    stats[f"id@{k}"] = round(sum(rank <= k for rank in ranks) / len(ranks), 4)
            summary[kind][method] = stats
    return summary


def markdown(rows: list[dict], summary: dict, examples: int = 4) -> str:
    lines = []
    for kind, methods in summary.items():
        metrics = [m for m in ("rouge_l", "cosine", "class_rate", "label_precision", "label_f1", "id@1", "id@5")
                   if any(m in s for s in methods.values())]
        n = next(iter(methods.values()))["n"]
        lines += [f"### {kind} (held-out tasks: {n})", "",
                  "| method | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
        for method, s in methods.items():
            label = method + (" (ORACLE)" if method == "inspect_oracle" else "")
            cells = [("" if m not in s else f"{s[m]:.3f}" if m.startswith("id@") else
                      f"{s[m]['mean']:.3f} ± {s[m]['std']:.3f}") for m in metrics]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
        key = "class_rate" if kind.startswith("classification") else "rouge_l"
        tr = sorted((r for r in rows if r["kind"] == kind and r["method"] == "translator"), key=lambda r: -r[key])
        if tr:
            lines += [f"Translator examples ({kind}; best and worst by {key}):", ""]
            by_task = {(r["task"], r["method"]): r for r in rows}
            for r in tr[:examples] + tr[-examples:]:
                lf = by_task.get((r["task"], "inspect"), {}).get("text", "")
                lines.append(f"- `{r['task']}` ({key} {r[key]:.2f})  \n  reference: {r['reference']}  \n"
                             f"  translator: {r['text']}  \n  InSPEcT label-free: {lf}")
            lines.append("")
    return "\n".join(lines)


def write_results(out: Path, rows: list[dict], summary: dict) -> None:
    out = Path(out)
    atomic.write_json(out / "rows.json", rows)
    atomic.write_json(out / "summary.json", summary)
    atomic.write_text(out / "results.md", markdown(rows, summary))


def per_task_table(rows: list[dict], kind: str) -> str:
    """Markdown: one line per held-out task with each method's main score."""
    key = "class_rate" if kind.startswith("classification") else "rouge_l"
    tasks = sorted({r["task"] for r in rows if r["kind"] == kind})
    by = {(r["task"], r["method"]): r for r in rows}
    methods = [m for m in METHODS if any((t, m) in by for t in tasks)]
    lines = ["| task | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for t in tasks:
        lines.append(f"| {t} | " + " | ".join(f"{by[(t, m)][key]:.2f}" if (t, m) in by else "" for m in methods) + " |")
    return "\n".join(lines)

