"""Choosing InSPEcT layer pairs: oracle (analysis only) and label-free (calibrated once, then reused).

* Oracle: score every pair's text against the prompt's reference and keep the best. It looks at the answer,
  so every description it returns carries ``oracle=True`` and outputs say "oracle".
* Label-free: ``calibrate`` runs the grid on training prompts that have references, ranks pairs by their mean
  score, and stores the top pairs as the model's profile. ``describe_label_free`` then applies those pairs,
  unchanged, to new prompts without any reference (what the translator paper did with 50 training prompts).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from soft2hard import atomic
from soft2hard.errors import Soft2HardError
from soft2hard.interpret.base import Description
from soft2hard.interpret.inspection import InspectConfig, inspect_grid
from soft2hard.lm import LanguageModel
from soft2hard.metrics import class_rate, get_metric
from soft2hard.provenance import provenance
from soft2hard.tasks.base import Task
from soft2hard.training import is_int

logger = logging.getLogger(__name__)
SCORE_METRICS = ("rouge_l", "embedding_cosine", "class_rate")


def reference_text(task: Task) -> str:
    """The reference an InSPEcT description is compared with: the description, plus labels if any
    (the same ``"<description>: <labels>"`` form as the inspection demos)."""
    if task.labels:
        return f"{task.description}: {', '.join(task.labels)}"
    return task.description


def score_texts(texts: Sequence[str], reference: str, metric: str = "rouge_l",
                labels: Sequence[str] | None = None) -> list[float]:
    if metric == "class_rate":
        if not labels:
            raise Soft2HardError("metric class_rate needs a classification task (a label set)")
        return [class_rate(t, labels) for t in texts]
    if metric not in SCORE_METRICS:
        raise Soft2HardError(f"unknown score metric {metric!r}; choose one of {', '.join(SCORE_METRICS)}")
    return get_metric(metric).fn(list(texts), [reference] * len(texts))


def oracle_rank(descriptions: list[Description], reference: str, metric: str = "rouge_l",
                labels: Sequence[str] | None = None) -> list[Description]:
    """Score every description against the reference; best first; all marked oracle."""
    scores = score_texts([d.text for d in descriptions], reference, metric, labels)
    for d, s in zip(descriptions, scores):
        d.score, d.oracle = float(s), True
        d.details["score_metric"] = metric
    return sorted(descriptions, key=lambda d: -d.score)


@dataclass
class Profile:
    """A model's label-free InSPEcT setting: ranked layer pairs and the inspection prompt they were chosen for."""

    model: str
    pairs: list[tuple[int, int]]
    metric: str
    n_prompts: int
    mean_scores: dict[str, float] = field(default_factory=dict)  # "s,t" -> mean score over calibration prompts
    inspect: dict = field(default_factory=dict)  # InspectConfig fields that affect the texts
    calibration_prompts: list[str] = field(default_factory=list)
    calibration_tasks: list[str] = field(default_factory=list)  # the tasks of those prompts (seen in training)
    notes: str = ""  # provenance remarks, e.g. how a shipped profile's task list was recovered
    provenance: dict = field(default_factory=dict)  # the software that wrote the file (save records it)

    def saw(self, task: str) -> bool:
        """Whether a calibration prompt was tuned on ``task``: a score on that task is not a held-out score."""
        return task in self.calibration_tasks

    def save(self, path: Path) -> None:
        atomic.write_json(Path(path), {**asdict(self), "provenance": provenance()})

    @classmethod
    def load(cls, path: Path) -> Profile:
        path = Path(path)
        if not path.exists():
            raise Soft2HardError(f"no InSPEcT profile at {path}; run 'soft2hard inspect calibrate' first")
        data = atomic.read_json(path)
        problem = _profile_problem(data)
        if problem is None:
            try:
                InspectConfig(**data.get("inspect", {}))
            except Soft2HardError as err:
                problem = f"inspect: {err}"
        if problem is not None:
            raise Soft2HardError(f"{path}: not a valid InSPEcT profile ({problem})")
        return cls(**{**data, "pairs": [tuple(p) for p in data["pairs"]]})

    def config(self, **overrides) -> InspectConfig:
        return InspectConfig(**{**self.inspect, **overrides})


def _is_str_list(x) -> bool:
    return isinstance(x, list) and all(isinstance(v, str) for v in x)


# field -> (check, what it must be); the first four are required
_PROFILE_FIELDS = {
    "model": (lambda v: isinstance(v, str), "a string"),
    "pairs": (lambda v: isinstance(v, list) and all(isinstance(p, list) and len(p) == 2 and all(map(is_int, p))
                                                   for p in v), "a list of [source, target] layer pairs"),
    "metric": (lambda v: isinstance(v, str), "a string"),
    "n_prompts": (is_int, "an integer"),
    "mean_scores": (lambda v: isinstance(v, dict) and all(isinstance(x, int | float) and not isinstance(x, bool)
                                                          for x in v.values()), "an object of numbers"),
    "inspect": (lambda v: isinstance(v, dict), "an object"),
    "calibration_prompts": (_is_str_list, "a list of strings"),
    "calibration_tasks": (_is_str_list, "a list of strings"),
    "notes": (lambda v: isinstance(v, str), "a string"),
    "provenance": (lambda v: isinstance(v, dict), "an object"),
}
# the InspectConfig fields a profile may set (calibrate stores all but the layers and the batch size)
_INSPECT_FIELDS = {
    "source_layers": (lambda v: v is None or (isinstance(v, list) and all(map(is_int, v))), "null or integers"),
    "target_layers": (lambda v: v is None or (isinstance(v, list) and all(map(is_int, v))), "null or integers"),
    "n_demos": (is_int, "an integer"), "demo_seed": (is_int, "an integer"),
    "demos": (lambda v: isinstance(v, list) and all(_is_str_list(d) and len(d) == 2 for d in v),
              "a list of [description, labels] pairs"),
    "placeholder": (lambda v: isinstance(v, str), "a string"), "max_new_tokens": (is_int, "an integer"),
    "inject": (lambda v: isinstance(v, str), "a string"), "batch_size": (is_int, "an integer"),
}


def _profile_problem(data) -> str | None:
    """What is wrong with a profile's JSON (None: nothing); one line."""
    if not isinstance(data, dict):
        return "expected a JSON object"
    for fields, where, required in ((_PROFILE_FIELDS, "", ("model", "pairs", "metric", "n_prompts")),
                                    (_INSPECT_FIELDS, "inspect.", ())):
        unknown = sorted(set(data) - set(fields))
        if unknown:
            return f"unknown field(s) {', '.join(where + repr(k) for k in unknown)}"
        for key, (ok, what) in fields.items():
            if key not in data:
                if key in required:
                    return f"missing field {key!r}"
            elif not ok(data[key]):
                return f"field {where}{key!r} must be {what}"
        data = data.get("inspect", {})
    return None


SHIPPED_PROFILES = Path(__file__).resolve().parents[1] / "data" / "profiles"


def _profile_name(model: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", model) + ".json"


def profile_path(cache_dir: Path, model: str) -> Path:
    """Where ``calibrate`` writes the user's profile for ``model``."""
    return Path(cache_dir) / "profiles" / _profile_name(model)


def find_profile(cache_dir: Path, model: str) -> Path:
    """The user's calibrated profile if there is one, else the one shipped with soft2hard (built-in models;
    see docs/INSPECT.md section B for how it was calibrated)."""
    user = profile_path(cache_dir, model)
    shipped = SHIPPED_PROFILES / _profile_name(model)
    return user if user.exists() or not shipped.exists() else shipped


def calibrate(lm: LanguageModel, items: Sequence[tuple[str, torch.Tensor, str, Sequence[str] | None]],
              cfg: InspectConfig, metric: str = "rouge_l", top_k: int = 3, progress: bool = True,
              tasks: Sequence[str] | None = None) -> Profile:
    """Rank the grid's pairs by mean score over ``items`` = (name, prompt, reference, labels).

    ``tasks``: each item's task, stored as the profile's ``calibration_tasks`` (default: the task recorded in
    the prompt folder an item is named after, where there is one)."""
    if not items:
        raise Soft2HardError("calibration needs at least one prompt with a reference")
    if tasks is None:
        tasks = [t for t in (_recorded_task(name) for name, *_ in items) if t]
    grids = []
    for name, prompt, reference, labels in tqdm(items, desc="calibrate", disable=not progress):
        grids.append((inspect_grid(lm, prompt, cfg), reference, labels))
        logger.info("ran the grid on %s", name)
    means = mean_pair_scores(grids, metric)
    ranked = sorted(means, key=lambda p: (-means[p], p))
    keep = {k: v for k, v in asdict(cfg).items() if k not in ("source_layers", "target_layers", "batch_size")}
    keep["demos"] = [list(d) for d in keep["demos"]]
    return Profile(model=lm.name, pairs=ranked[:top_k], metric=metric, n_prompts=len(items),
                   mean_scores={f"{s},{t}": round(v, 5) for (s, t), v in means.items()}, inspect=keep,
                   calibration_prompts=[name for name, *_ in items],
                   calibration_tasks=sorted(set(tasks)))


def _recorded_task(name: str) -> str | None:
    """The task in a tuned prompt folder's metadata (None if ``name`` is not such a folder)."""
    from soft2hard.prompts import METADATA_NAME

    try:
        task = atomic.read_json(Path(name) / METADATA_NAME).get("task")
    except (OSError, ValueError, AttributeError, Soft2HardError):
        return None
    return task if isinstance(task, str) else None


def mean_pair_scores(grids: Sequence[tuple[list[Description], str, Sequence[str] | None]],
                     metric: str = "rouge_l") -> dict[tuple[int, int], float]:
    """Mean score of each layer pair over prompts, from their grids' descriptions (+ reference, labels)."""
    totals: dict[tuple[int, int], float] = {}
    for descs, reference, labels in grids:
        for d, s in zip(descs, score_texts([d.text for d in descs], reference, metric, labels)):
            totals[d.layers] = totals.get(d.layers, 0.0) + float(s)
    return {p: v / len(grids) for p, v in totals.items()}


def describe_label_free(lm: LanguageModel, prompt: torch.Tensor, profile: Profile, k: int = 1) -> list[Description]:
    """Describe with the profile's top-k pairs; the first is *the* label-free description."""
    if profile.model != lm.name:
        logger.warning("profile was calibrated for %s, used with %s", profile.model, lm.name)
    descs = inspect_grid(lm, prompt, profile.config(), pairs=profile.pairs[:k])
    for d in descs:
        d.details["selection"] = f"label-free (calibrated on {profile.n_prompts} prompts, {profile.metric})"
    return descs


def parse_layers(spec: str) -> list[int]:
    """'1-29' | '1,5,9' | '0-29:2' (range with step) -> sorted unique ints."""
    out: set[int] = set()
    try:
        for part in spec.split(","):
            part = part.strip()
            step = 1
            if ":" in part:
                part, step_s = part.split(":")
                step = int(step_s)
            if "-" in part:
                a, b = part.split("-")
                out.update(range(int(a), int(b) + 1, step))
            elif part:
                out.add(int(part))
    except ValueError:
        raise Soft2HardError(f"bad layer list {spec!r}; use e.g. '1-29', '2,4,8' or '0-29:2'") from None
    return sorted(out)


def parse_pairs(spec: str) -> list[tuple[int, int]]:
    """'3:5,10:2' -> [(3, 5), (10, 2)]"""
    pairs = []
    for part in spec.split(","):
        try:
            s, t = part.split(":")
            pairs.append((int(s), int(t)))
        except ValueError:
            raise Soft2HardError(f"bad layer pair {part!r} in {spec!r}; use SOURCE:TARGET, e.g. '3:5,10:2'") from None
    return pairs
