"""Fresh prompts (issue 18): soft prompts a user would make, not the DoD build's, read by a translator.

    python scripts/fresh_prompts.py --per-bucket 3 --out runs/fresh --translator runs/tr-all [--dod A B]

Picks the first `--per-bucket` clean held-out tasks of each result bucket (general, general:comp,
classification, classification:comp, classification:sentence) in manifest order (a rule that reads no example;
tasks whose data cannot be loaded here, i.e. BIG-bench without its sdist, are left out and named),
tunes one prompt per task with `soft2hard tune-many` at the tuning defaults (seed 0), writes a DoD manifest of
them (`OUT/manifest.json`, all held out) and runs `translator eval --methods translator` on it. It then prints the
fresh prompts' figures next to the DoD prompts' figures of the same tasks (from `--dod-rows`, the rows.json of a
`translator eval` of the banks with the same translator). With `--user FILE` (a JSONL/CSV classification file, e.g.
examples/support_tickets.jsonl) it also tunes a prompt on that file and reports its class rate on its own row.
Finished steps are skipped on a rerun.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from soft2hard.dod.manifest import Manifest, PromptEntry, TaskEntry, without_leaking_training  # noqa: E402
from soft2hard.errors import Soft2HardError  # noqa: E402
from soft2hard.interpret.comparison import bucket  # noqa: E402
from soft2hard.tasks.files import load_task_file  # noqa: E402
from soft2hard.tasks.registry import get_task  # noqa: E402


def run(cmd: list[str]) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def figures(rows: list[dict], tasks: set[str], pooled: bool = False) -> dict[str, str]:
    """The translator's mean figures per result bucket of ``tasks``; ``pooled``: per answer type (classification,
    general), since a few tasks per bucket are too few to compare alone."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        if r["task"] in tasks and r["method"] == "translator":
            groups.setdefault(r["kind"].split(":")[0] if pooled else r["kind"], []).append(r)
    out = {}
    for b, sel in sorted(groups.items()):
        key = "class_rate" if b.startswith("classification") else "rouge_l"
        out[b] = (f"{key} {statistics.fmean(r[key] for r in sel):.3f}, cosine "
                  f"{statistics.fmean(r['cosine'] for r in sel):.3f} (n={len(sel)})")
    return out


def loadable(name: str) -> bool:
    """Whether a task's examples can be built on this machine (BIG-bench tasks need the sdist, see DOD_CARD.md)."""
    try:
        get_task(name)
    except Soft2HardError:
        return False
    return True


def slug(name: str) -> str:
    """The run folder tune-many gives a task (a file's stem for a user file)."""
    return name.removeprefix("user/").replace("/", "__")


def user_entry(path: Path) -> TaskEntry:
    """A held-out classification entry for a user's file: its reference is its label list."""
    task = load_task_file(path)
    if not task.labels:
        raise SystemExit(f"{path}: --user takes classification files (an output column with a few labels)")
    return TaskEntry(name=f"user/{path.stem}", kind="classification", group=f"user/{path.stem}", split="heldout",
                     reference=", ".join(task.labels), reference_source="user file labels", labels=task.labels,
                     prompts=())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dod", nargs="+", default=["dod/smollm2-135m", "dod/smollm2-135m-comp"])
    ap.add_argument("--per-bucket", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("runs/fresh"))
    ap.add_argument("--translator", type=Path, required=True)
    ap.add_argument("--dod-rows", type=Path, default=None, help="rows.json of the same translator on the banks")
    ap.add_argument("--user", nargs="*", type=Path, default=[], help="users' JSONL/CSV classification files")
    args = ap.parse_args()
    exe = [sys.executable, "-m", "soft2hard.cli"]
    manifest, _ = without_leaking_training(Manifest.load_many(args.dod))
    chosen: dict[str, list] = {}
    unavailable: list[str] = []
    for t in manifest.clean_heldout():
        chosen.setdefault(bucket(t), [])
        if len(chosen[bucket(t)]) >= args.per_bucket:
            continue
        if not loadable(t.name):
            unavailable.append(t.name)
            continue
        chosen[bucket(t)].append(t)
    if unavailable:
        print(f"left out {len(unavailable)} tasks whose data cannot be loaded here (BIG-bench needs "
              f"SOFT2HARD_BIGBENCH_SDIST): {', '.join(unavailable[:5])}{' ...' if len(unavailable) > 5 else ''}",
              flush=True)
    tasks = [t for ts in chosen.values() for t in ts] + [user_entry(path) for path in args.user]
    sources = {t.name: t.name for t in tasks} | {f"user/{p.stem}": str(p) for p in args.user}
    prompts = args.out / "prompts"
    done = all((prompts / slug(t.name) / "seed0" / "metrics.json").exists() for t in tasks)
    if not done:
        run([*exe, "tune-many", "--tasks", ",".join(sources[t.name] for t in tasks), "--seeds", "0",
             "--out", str(prompts), "--quiet", *(["--resume"] if prompts.exists() else [])])
    entries = []
    for t in tasks:
        folder = prompts / slug(t.name) / "seed0"
        metrics = json.loads((folder / "metrics.json").read_text())
        entry = PromptEntry(id=f"{t.name}@fresh", file=str(folder.relative_to(args.out)), seed=0,
                            step=metrics["best_step"], validation_score=metrics["validation_score"], best=True)
        entries.append(replace(t, prompts=(entry,), test_score=metrics["test_score"],
                               baseline_score=metrics["baseline_score"]).to_dict())
    (args.out / "manifest.json").write_text(json.dumps({"format": "soft2hard-dod", "version": 1,
                                                         "model": manifest.model, "settings": {"fresh": True},
                                                         "tasks": entries}, indent=1))
    ev = args.out / f"eval-{args.translator.name}"
    if not (ev / "rows.json").exists():
        run([*exe, "translator", "eval", "--dod", str(args.out), "--translator", str(args.translator),
             "--methods", "translator", "--out", str(ev)])
    names = {t.name for t in tasks if not t.name.startswith("user/")}
    rows = json.loads((ev / "rows.json").read_text())
    dod_rows = json.loads(args.dod_rows.read_text()) if args.dod_rows else []
    if dod_rows:  # like for like: the tasks the translator's own bank evaluation kept (clean for it)
        kept = {r["task"] for r in dod_rows if r["method"] == "translator"}
        if names - kept:
            print(f"not compared (not clean for this translator): {', '.join(sorted(names - kept))}")
        names &= kept
    fresh, dod = figures(rows, names), figures(dod_rows, names)
    print("| bucket | fresh prompts (tune defaults) | DoD prompts, same tasks |\n|---|---|---|")
    for b, text in fresh.items():
        print(f"| {b} | {text} | {dod.get(b, '')} |")
    dod_pooled = figures(dod_rows, names, pooled=True)
    for b, text in figures(rows, names, pooled=True).items():
        print(f"| all {b} | {text} | {dod_pooled.get(b, '')} |")
    for r in rows:
        if r["task"].startswith("user/"):
            print(f"| {r['task']} (user file) | class_rate {r['class_rate']:.3f}: {r['text']!r} | |")
    scores = [(t.name, e["baseline_score"], e["test_score"]) for t, e in zip(tasks, entries)]
    print("\nfresh prompts' task scores (no prompt -> prompt): " +
          ", ".join(f"{n} {b:.2f}->{s:.2f}" for n, b, s in scores))


if __name__ == "__main__":
    main()
