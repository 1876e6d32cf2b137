"""Fault injection: ``kill -9`` at random moments during soft2hard's long jobs, then resume.

For each job (``tune``, ``dod build``, ``translator train``, ``evaluate``, all on tiny random models) the script
runs the command once uninterrupted (the reference), then, in a fresh folder, starts it again and again, sends
SIGKILL to its process group after a seeded random delay, and finally runs it to completion (``--resume`` where
the command has it; ``dod build`` and ``evaluate`` resume by rerunning the same command).

When: N moments are drawn uniformly (seeded) within the reference run's duration and sorted. With
``--schedule progress`` (default) moment i is replayed on the job's progress: run i is killed as many seconds
after the folder holds k units of finished work (checkpoints, finished runs, result rows) as the reference was
past its k-th unit at that moment (moments start at the reference's first write), so the kills walk through the
whole job whatever the load on the machine, instead of piling up in the start-up (imports, model load) that every
resumed run repeats. With ``--schedule delay`` run i is simply killed moment i seconds after it starts; with
``--schedule write`` the kill, once past moment i, waits for the next write in progress (a temporary exists), so
it lands in the middle of writing a file or a checkpoint folder. A run that finishes before its kill counts as
completed; the remaining kills then hit reruns of the finished job (at a delay drawn within that run's
duration, or during its next write), which must not damage it.

After every kill the folder is checked:
  * every ``*.json`` parses and every ``*.safetensors`` opens and reads (temporaries excepted);
  * no finished work was lost (checkpoints, finished runs, manifest prompts, result rows never disappear);
  * which temporaries (``.NAME.XXXX.tmp``, ``.NAME.old`` from soft2hard.atomic, ``.final`` staging) a kill left.
After the final run no temporary may be left, and the results must be identical to the reference: tensors bit
for bit (``torch.equal``), JSON results equal (wall-clock fields left out). Every run has a timeout.

Usage:  python bench/faults.py [--kills 5] [--seed 0] [--jobs tune,dod,translator,evaluate] [--schedule progress]
                               [--json PATH] [--workdir DIR]
"""

from __future__ import annotations

import os
import sys

# bench/inspect.py shadows the standard library's `inspect`: drop this folder from the import path.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]
import argparse  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

# the sibling modules, with this folder on the import path only while they load (the standard library's `inspect`
# is loaded by now: bench/inspect.py cannot shadow it); corrupt_files, same_tensors: for tests/test_faults.py
sys.path.insert(0, _HERE)
from fault_checks import corrupt_files, fingerprint, inspect_folder, same_tensors, temporaries  # noqa: E402,F401
from fault_jobs import (  # noqa: E402
    JOBS,
    Job,
    command,
    dod_job,
    evaluate_job,
    make_tiny_models,
    soft2hard_env,
    translator_job,
    tune_job,
)

sys.path.remove(_HERE)


# --- running, killing, checking --------------------------------------------------------------------------------

class JobFailed(RuntimeError):
    pass


def _tail(log: Path, n: int = 2000) -> str:
    try:
        return log.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def run_to_completion(job: Job, out: Path, resume: bool, cache_dir: Path, log: Path, timeout: float) -> float:
    """Run the job's command until it exits; returns its wall time. Raises JobFailed on a non-zero exit or a
    timeout (the process group is killed then)."""
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(command(job, out, resume, cache_dir), env=soft2hard_env(), stdout=fh,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise JobFailed(f"{job.name}: no result within {timeout:.0f} s (see {log})") from None
    if rc != 0:
        raise JobFailed(f"{job.name} exited with {rc}:\n{_tail(log)}")
    return time.perf_counter() - t0


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=60)


def start_and_kill(job: Job, out: Path, resume: bool, cache_dir: Path, log: Path, should_kill: Callable[[float], bool],
                   timeout: float, poll: float = 0.01) -> tuple[bool, float]:
    """Start the command in its own session; SIGKILL its process group as soon as ``should_kill(elapsed)`` holds.
    Returns (killed, seconds); a run that exits first must succeed (JobFailed otherwise)."""
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(command(job, out, resume, cache_dir), env=soft2hard_env(), stdout=fh,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            while True:
                rc = proc.poll()
                elapsed = time.perf_counter() - t0
                if rc is not None:
                    if rc != 0:
                        raise JobFailed(f"{job.name} exited with {rc}:\n{_tail(log)}")
                    return False, elapsed
                if should_kill(elapsed):
                    _kill_group(proc)
                    return True, elapsed
                if elapsed > timeout:
                    _kill_group(proc)
                    raise JobFailed(f"{job.name}: no result within {timeout:.0f} s (see {log})")
                time.sleep(poll)
        finally:
            if proc.poll() is None:
                _kill_group(proc)


def _progress(job: Job, out: Path) -> int | None:
    """How many units of finished work ``out`` holds now (None if a live writer got in the way of looking)."""
    try:
        return len(job.progress(out))
    except OSError:
        return None


@dataclass
class FaultResult:
    job: str
    kills: int
    kills_after_first_write: int  # kills that hit a run after it had written something (not during start-up)
    runs_completed: int
    identical: bool
    corrupt: list[str]
    leftover_temporaries: list[str]
    lost: list[str]
    temporaries_after_kills: int  # distinct temporaries found right after the kills
    wall_seconds: float
    reference_seconds: float
    reference_startup: float
    events: list[dict]
    differences: list[str]

    def row(self) -> dict:
        return {"job": self.job, "kills": self.kills, "kills_after_first_write": self.kills_after_first_write,
                "runs_completed": self.runs_completed, "identical": self.identical,
                "corrupt_files": len(self.corrupt), "leftover_temporaries": len(self.leftover_temporaries),
                "lost_work": len(self.lost), "temporaries_after_kills": self.temporaries_after_kills,
                "wall_seconds": round(self.wall_seconds, 1), "reference_seconds": round(self.reference_seconds, 1),
                "reference_startup_seconds": round(self.reference_startup, 1), "details": {"corrupt": self.corrupt, "leftover_temporaries": self.leftover_temporaries,
                            "lost": self.lost, "differences": self.differences[:20], "runs": self.events}}

    @property
    def ok(self) -> bool:
        return self.identical and not (self.corrupt or self.leftover_temporaries or self.lost)


@dataclass
class Reference:
    path: Path
    seconds: float  # wall time of the uninterrupted run
    startup: float  # seconds until it first wrote into its folder (imports, model load, planning)
    timeline: list[float]  # timeline[i]: seconds until i + 1 units of finished work existed

    def locate(self, moment: float) -> tuple[int, float]:
        """A moment of the reference run as (units of work finished by then, seconds since the last of them or,
        with none finished, since the first write)."""
        k = sum(t <= moment for t in self.timeline)
        return k, moment - (self.timeline[k - 1] if k else self.startup)


def run_reference(job: Job, workdir: Path, cache_dir: Path, timeout: float) -> Reference:
    """The uninterrupted run, timed: in total, until its first write, and until each unit of finished work."""
    ref = Path(workdir) / f"{job.name}-reference"
    (Path(workdir) / "logs").mkdir(parents=True, exist_ok=True)
    first_write: list[float] = []
    timeline: list[float] = []

    def watch(elapsed: float) -> bool:  # never kills
        if not first_write and fingerprint(ref):
            first_write.append(elapsed)
        if first_write:
            timeline.extend([elapsed] * ((_progress(job, ref) or 0) - len(timeline)))
        return False

    _, seconds = start_and_kill(job, ref, False, cache_dir, Path(workdir) / "logs" / f"{job.name}-reference.log",
                                watch, timeout, poll=0.02)
    done = len(job.progress(ref))
    timeline.extend([seconds] * (done - len(timeline)))  # written in the last instants
    return Reference(ref, seconds, first_write[0] if first_write else 0.0, timeline[:done])


def after_delay(delay: float) -> Callable[[float], bool]:
    return lambda elapsed: elapsed >= delay


def after_progress(job: Job, out: Path, units: int, delay: float) -> Callable[[float], bool]:
    """Kill ``delay`` seconds after the folder holds ``units`` units of finished work, and not before the run has
    written into the folder (a resumed run that already holds them is killed ``delay`` after its first write)."""
    before, marks = fingerprint(out), {}

    def should_kill(elapsed: float) -> bool:
        if "wrote" not in marks:
            if fingerprint(out) == before:
                return False
            marks["wrote"] = elapsed
        if "reached" not in marks:
            done = _progress(job, out)
            if done is None or done < units:
                return False
            marks["reached"] = elapsed
        return elapsed >= marks["reached"] + delay

    return should_kill


def during_write(out: Path, after: Callable[[float], bool] | None = None) -> Callable[[float], bool]:
    """Kill the first time a new temporary exists in the folder (a write in progress), once ``after`` holds
    (temporaries left by an earlier kill do not count)."""
    marks, left = {}, set(temporaries(out))

    def should_kill(elapsed: float) -> bool:
        if "after" not in marks:
            if after is not None and not after(elapsed):
                return False
            marks["after"] = elapsed
        return bool(set(temporaries(out)) - left)

    return should_kill


SCHEDULES = ("progress", "delay", "write")


def inject_faults(job: Job, reference: Reference, workdir: Path, cache_dir: Path, kills: int, rng: random.Random,
                  timeout: float, schedule: str = "progress", window: tuple[float, float] | None = None,
                  max_runs: int | None = None) -> FaultResult:
    """Start the job in a fresh folder, kill it ``kills`` times, run it to completion, check and compare.

    Each run but the first resumes. The kill moments are drawn uniformly (seeded) within ``window`` of the
    reference run (default: from its first write to its end; for "delay" from its start) and sorted. ``schedule``:
      progress  run i is killed at moment i replayed on the job's progress (:meth:`Reference.locate`,
                :func:`after_progress`): as far past the same unit of finished work as the reference was then.
                Robust to a loaded machine and to the start-up every resumed run repeats.
      delay     run i is killed that many seconds after it starts (plain wall clock; on a busy machine many
                kills land in the start-up or after the end).
      write     as progress, then the kill waits for the next write in progress (a temporary in the folder):
                every kill lands in the middle of writing a file or assembling a checkpoint folder.
    Once a run finishes before its kill, the remaining kills hit reruns of the finished job (at a delay drawn
    within that run's duration; with "write" at their next write), which must not damage it. At most ``max_runs`` (default 3 x kills) runs come
    before the final one."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}")
    out = Path(workdir) / f"{job.name}-faults"
    logs = Path(workdir) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    lo, hi = window or ((0.0, reference.seconds) if schedule == "delay" else (reference.startup, reference.seconds))
    moments = sorted(rng.uniform(lo, hi) for _ in range(kills))
    finished_in: float | None = None  # duration of a run that finished before its kill
    seen: set[str] = set()
    corrupt: set[str] = set()
    lost: set[str] = set()
    events: list[dict] = []
    max_runs = max_runs if max_runs is not None else 3 * kills
    while sum(e["killed"] for e in events) < kills and len(events) < max_runs:
        moment = moments[min(len(events), kills - 1)]
        if finished_in is not None and schedule == "write":
            should_kill, planned = during_write(out), "rerun of a finished job, during a write"
        elif finished_in is not None:
            should_kill, planned = after_delay(rng.uniform(0.0, finished_in)), "rerun of a finished job"
        elif schedule == "delay":
            should_kill, planned = after_delay(moment), f"{moment:.2f} s"
        else:
            units, delay = reference.locate(moment)
            should_kill, planned = after_progress(job, out, units, delay), f"{delay:.2f} s after unit {units}"
            if schedule == "write":
                should_kill, planned = during_write(out, should_kill), f"first write from {planned}"
        before = fingerprint(out)
        killed, seconds = start_and_kill(job, out, bool(events), cache_dir, logs / f"{job.name}-run{len(events)}.log",
                                         should_kill, timeout)
        if not killed:
            finished_in = seconds if finished_in is None else min(finished_in, seconds)
        check = inspect_folder(job, out, seen)
        corrupt |= set(check.corrupt)
        lost |= set(check.lost)
        events.append({"planned": planned, "killed": killed, "seconds": round(seconds, 2),
                       "wrote": fingerprint(out) != before, "finished_work": len(seen),
                       "temporaries": check.temporaries, "corrupt": check.corrupt, "lost": check.lost})
    seconds = run_to_completion(job, out, True, cache_dir, logs / f"{job.name}-final.log", timeout)
    check = inspect_folder(job, out, seen)
    corrupt |= set(check.corrupt)
    lost |= set(check.lost)
    events.append({"planned": "final run", "killed": False, "seconds": round(seconds, 2), "finished_work": len(seen),
                   "temporaries": check.temporaries, "corrupt": check.corrupt, "lost": check.lost})
    differences = job.compare(reference.path, out)
    killed = [e for e in events if e["killed"]]
    return FaultResult(job.name, len(killed), sum(e["wrote"] for e in killed), len(events) - len(killed),
                       not differences, sorted(corrupt), check.temporaries, sorted(lost),
                       len(set().union(*(e["temporaries"] for e in killed))), time.perf_counter() - t0, reference.seconds,
                       reference.startup, events, differences)


# --- the report ------------------------------------------------------------------------------------------------

def failed_row(job: str, error: str) -> dict:
    return {"job": job, "kills": 0, "kills_after_first_write": 0, "runs_completed": 0, "identical": False,
            "corrupt_files": 0, "leftover_temporaries": 0, "lost_work": 0, "temporaries_after_kills": 0,
            "wall_seconds": 0.0, "reference_seconds": 0.0, "error": error}


def table(rows: list[dict]) -> str:
    head = ("| job | kills injected (after first write) | runs completed | identical | corrupted files | "
            "leftover temporaries after final run | lost work | temporaries seen after kills | reference (s) | "
            "wall time (s) |")
    lines = [head, "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['job']} | {r['kills']} ({r['kills_after_first_write']}) | {r['runs_completed']} | "
                     f"{'yes' if r['identical'] else 'no'} | {r['corrupt_files']} | {r['leftover_temporaries']} | "
                     f"{r['lost_work']} | {r['temporaries_after_kills']} | {r['reference_seconds']:.0f} | "
                     f"{r['wall_seconds']:.0f} |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kills", type=int, default=5, help="kills injected per job (default 5)")
    p.add_argument("--seed", type=int, default=0, help="seeds the kill delays")
    p.add_argument("--jobs", default=",".join(JOBS), help=f"comma-separated, from {', '.join(JOBS)}")
    p.add_argument("--schedule", default="progress", choices=SCHEDULES,
                   help="progress: kill moments replayed on the job's progress (default) | delay: wall clock | "
                        "write: as progress, then at the next write in progress")
    p.add_argument("--json", type=Path, default=None, help="also write the table (and details) here")
    p.add_argument("--workdir", type=Path, default=None, help="keep the folders here (default: a temporary one)")
    p.add_argument("--timeout", type=float, default=900, help="seconds allowed for any one run (default 900)")
    p.add_argument("--tune-steps", type=int, default=100, help="tune: steps (checkpoint every 10; default 100)")
    p.add_argument("--translator-epochs", type=int, default=20,
                   help="translator: epochs (checkpoint every 4 steps; default 20)")
    p.add_argument("--cache-dir", type=Path, default=None, help="default $SOFT2HARD_CACHE or ~/.cache/soft2hard")
    args = p.parse_args()
    jobs = [j.strip() for j in args.jobs.split(",") if j.strip()]
    if unknown := [j for j in jobs if j not in JOBS]:
        p.error(f"unknown job(s) {unknown}; choose from {', '.join(JOBS)}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    cache_dir = args.cache_dir or Path(os.environ.get("SOFT2HARD_CACHE") or Path.home() / ".cache" / "soft2hard")
    with tempfile.TemporaryDirectory(prefix="soft2hard-faults-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        llama, gemma = make_tiny_models(workdir / "models", cache_dir)
        print(f"kill -9 x {args.kills} per job, seed {args.seed}, schedule {args.schedule}, work folder {workdir}",
              flush=True)
        rows: list[dict] = []
        dod_ref: Path | None = None
        for name in JOBS:
            if name not in jobs and not (name == "dod" and {"translator", "evaluate"} & set(jobs)):
                continue
            if name == "tune":
                job = tune_job(llama, steps=args.tune_steps, eval_every=10)
            elif name == "dod":
                job = dod_job(llama)
            elif name == "translator":
                job = translator_job(dod_ref, epochs=args.translator_epochs, save_every=4)
            else:
                job = evaluate_job(dod_ref, llama, gemma)
            if name in ("translator", "evaluate") and dod_ref is None:
                rows.append(failed_row(name, "no reference DoD (the dod reference run failed)"))
                continue
            try:
                reference = run_reference(job, workdir, cache_dir, args.timeout)
                if name == "dod":
                    dod_ref = reference.path  # translator and evaluate read the reference DoD
                if name not in jobs:
                    continue
                rng = random.Random(f"{args.seed}:{name}")
                result = inject_faults(job, reference, workdir, cache_dir, args.kills, rng, args.timeout,
                                       args.schedule)
            except JobFailed as err:  # a run that fails (or times out) without being killed is a finding too
                print(f"{name}: FAILED: {err}", flush=True)
                if name in jobs:
                    rows.append(failed_row(name, str(err)))
                continue
            row = {**result.row(), "settings": job.settings}
            rows.append(row)
            status = "ok" if result.ok else "FAILED"
            kills_at = ", ".join(f"{e['seconds']:.1f}" for e in result.events if e["killed"])
            print(f"{name}: {status}: reference {reference.seconds:.1f} s (start-up {reference.startup:.1f} s), "
                  f"killed at {kills_at} s into a run, "
                  f"{row['runs_completed']} run(s) completed, {row['temporaries_after_kills']} temporaries seen "
                  "after kills", flush=True)
            for what in ("corrupt", "leftover_temporaries", "lost", "differences"):  # all empty when ok
                for line in row["details"][what]:
                    print(f"  {what}: {line}")
    print()
    print(table(rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"kills": args.kills, "seed": args.seed, "schedule": args.schedule,
                                         "command": " ".join(sys.argv), "rows": rows}, indent=2) + "\n")
    return 0 if rows and all(r["identical"] and not (r["corrupt_files"] or r["leftover_temporaries"] or
                                                     r["lost_work"]) for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
