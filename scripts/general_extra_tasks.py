"""The general tasks a third bank adds (issue 18): every general candidate of the DoD plan (generated ``gen/*``
tasks, one usable subtask per BIG-bench parent, every usable Natural-Instructions subtask; `plan.general_candidates`
with the first bank's settings) that the committed banks do not hold and that would not leak into any of their
held-out tasks (`plan.leaking_train_tasks`: a shared split group or a held-out label word in its reference).
With `--subtasks-per-parent K` it then adds up to K more usable subtasks of each BIG-bench parent (seeded order,
multiemo's non-English copies and the templated families of `plan.SKIPPED_PARENTS` excluded), after the first list.

    python scripts/general_extra_tasks.py [--dod dod/smollm2-135m dod/smollm2-135m-comp]   # prints a --tasks list

The rule reads task names, groups and references only, never an example's target.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from soft2hard.dod import plan  # noqa: E402
from soft2hard.dod.manifest import Manifest  # noqa: E402
from soft2hard.models import default_cache_dir  # noqa: E402
from soft2hard.tasks import bigbench  # noqa: E402


def more_subtasks(cache: Path, taken: set[str], args) -> list[str]:
    """Up to ``args.subtasks_per_parent`` further usable subtasks per BIG-bench parent (seeded order)."""
    by_parent: dict[str, list[str]] = {}
    for entry in bigbench.list_bigbench(cache):
        parts = entry["name"].split("/")
        if len(parts) == 3 and parts[1] not in plan.SKIPPED_PARENTS | {"multiemo", "natural_instructions"} \
                and entry["n_examples"] >= args.min_examples and entry["name"] not in taken:
            by_parent.setdefault(parts[1], []).append(entry["name"])
    out = []
    rng = random.Random("dod-more-subtasks:0")
    for _parent, names in sorted(by_parent.items()):
        kept = 0
        for name in rng.sample(sorted(names), len(names)):
            if kept >= args.subtasks_per_parent:
                break
            task = plan.restrict_inputs(bigbench.load_bigbench(name, cache), args.max_input_chars)
            if len(task.examples) >= args.min_examples:
                out.append(name)
                kept += 1
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dod", nargs="+", default=["dod/smollm2-135m", "dod/smollm2-135m-comp"])
    ap.add_argument("--min-examples", type=int, default=40)
    ap.add_argument("--max-input-chars", type=int, default=200)
    ap.add_argument("--subtasks-per-parent", type=int, default=0)
    args = ap.parse_args()
    cache = default_cache_dir()
    banks = Manifest.load_many(args.dod)
    have = {t.name for t in banks.tasks}
    candidates = [t.name for t in plan.general_candidates(cache, 0, args.min_examples, args.max_input_chars)
                  if t.name not in have]
    if args.subtasks_per_parent > 0:
        candidates += more_subtasks(cache, {*have, *candidates}, args)
    planned = plan.plan_explicit(candidates, cache, seed=0, heldout=0)
    leaks = plan.leaking_train_tasks([*banks.tasks, *planned])
    chosen = [t.name for t in planned if t.name not in leaks]
    for t in planned:
        if t.name in leaks:
            print(f"left out {t.name}: {leaks[t.name]}", file=sys.stderr)
    print(f"{len(chosen)} of {len(candidates)} new general candidates", file=sys.stderr)
    print(",".join(chosen))


if __name__ == "__main__":
    main()
