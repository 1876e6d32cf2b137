"""Which tasks go into a dataset of datasets, with what reference, in which split.

Three kinds (METHODS.md §4; issue 9 adds the third):
  general         BIG-bench tasks (one subtask per parent; every Natural-Instructions subtask) and the
                  generated ``gen/*`` tasks; the reference is the task's instruction/description.
  classification  word-category tasks (``cat/...``) whose reference is the label set. The 48 categories are
                  split first: held-out label sets are drawn only from held-out categories, and a training task
                  whose target text names a held-out label is dropped (:func:`drop_leaking_train_tasks`), so no
                  held-out label ever appears in translator training. Plan kind ``classification_large`` does
                  the same over the 163 categories of ``data/categories_large.json`` (its own category split;
                  no name or member is shared with the 48, so the two families' splits cannot cross).
  distilled       context distillation of each general task's reference instruction on that task's inputs
                  (teacher-forced on the teacher's own continuations, so no labels are used); the reference is
                  the compressed text itself, and the split follows the source task's. Extra instruction texts
                  (paraphrases, generated instructions: :func:`load_instructions`) are distilled the same way on
                  a planned general task's inputs, in that task's split.
The split is by *group* (a BIG-bench parent task, a Natural-Instructions source dataset, a category set, a
template family of ``gen/*`` tasks), so near-identical tasks never straddle train and held-out. Everything is
seeded. :func:`heldout_leaks` finds held-out tasks of an existing plan or manifest that break either rule.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from soft2hard.dod.references import label_reference, reference_for
from soft2hard.errors import Soft2HardError
from soft2hard.tasks import bigbench, categories, compositional, generated
from soft2hard.tasks.base import Task

logger = logging.getLogger(__name__)
KINDS = ("general", "classification", "distilled")
# what a build may plan: compositional tasks become general/classification ones, classification_large tasks are
# classification ones over the second category inventory
PLAN_KINDS = (*KINDS, "compositional", "classification_large")
DISTILLED_PREFIX = "distilled/"
MAX_TARGET_CHARS = 100
# parents whose subtasks are near-copies of one another in other languages/domains: keep the English one
PREFERRED_SUBTASK = {"multiemo": "bigbench/multiemo/all_sentence_en"}
# big families of templated subtasks whose descriptions only name the template: not useful references
SKIPPED_PARENTS = {"mult_data_wrangling", "list_functions", "bbq_lite_json"}


@dataclass(frozen=True)
class PlannedTask:
    name: str  # registry name (gen/..., cat/..., bigbench/...)
    kind: str  # general | classification
    group: str  # the unit of the train/held-out split
    split: str  # train | heldout
    reference: str
    reference_source: str
    labels: tuple[str, ...] | None = None
    inputs: str | None = None  # the task whose inputs a distilled prompt is trained on (default: name)
    teacher_prompt: str | None = None  # distilled kind: the text the soft prompt compresses
    references: tuple[str, ...] | None = None  # every text that states the task (reference first), if several

    def to_dict(self) -> dict:
        d = asdict(self)
        d["labels"] = list(self.labels) if self.labels else None
        d["references"] = list(self.references) if self.references else None
        return d


def restrict_inputs(task: Task, max_input_chars: int | None, max_target_chars: int = MAX_TARGET_CHARS) -> Task:
    """The task with only its examples whose input fits ``max_input_chars`` and whose target fits
    ``max_target_chars`` (training and evaluation cost grow with both; the DoD needs many cheap prompts more
    than a few expensive ones)."""
    if not max_input_chars:
        return task
    kept = tuple(ex for ex in task.examples if len(ex.input) <= max_input_chars and len(ex.target) <= max_target_chars)
    if len(kept) == len(task.examples):
        return task
    return replace(task, examples=kept or task.examples[:1],
                   metadata={**task.metadata, "max_input_chars": max_input_chars, "max_target_chars": max_target_chars})


def _group_of(name: str) -> str:
    """The split group of a general task: its BIG-bench parent, Natural-Instructions source dataset or (``gen/*``)
    reference template family; any other task is a group of its own."""
    parts = name.split("/")
    if name.startswith(compositional.PREFIX) and name in compositional.compositional_names():
        return compositional.group_of(name)
    if name.startswith(generated.PREFIX) and name in generated.generated_names():
        return generated.PREFIX + generated.family_of(name)
    if parts[0] != "bigbench":
        return name
    if parts[1] == "natural_instructions" and len(parts) > 2:
        m = re.match(r"subtask\d+_([a-z0-9]+)", parts[2])  # the source dataset, e.g. quoref, mctaco
        return f"natural_instructions/{m.group(1) if m else parts[2]}"
    return parts[1]


def general_candidates(cache_dir: Path, seed: int, min_examples: int, max_input_chars: int | None) -> list[Task]:
    """Generated tasks plus one usable subtask per BIG-bench parent (every Natural-Instructions subtask)."""
    tasks = [generated.load_generated(name) for name in generated.generated_names()]
    by_parent: dict[str, list[dict]] = {}
    for entry in bigbench.list_bigbench(cache_dir):
        parent = entry["name"].split("/")[1]
        if parent not in SKIPPED_PARENTS and entry["n_examples"] >= min_examples:
            by_parent.setdefault(parent, []).append(entry)
    rng = random.Random(f"dod-general:{seed}")
    for parent, entries in sorted(by_parent.items()):
        names = sorted(e["name"] for e in entries)
        if parent == "natural_instructions":
            choices = names
        elif PREFERRED_SUBTASK.get(parent) in names:
            choices = [PREFERRED_SUBTASK[parent]]
        else:
            choices = rng.sample(names, len(names))  # try subtasks in a seeded order, keep the first usable
        for name in choices:
            task = restrict_inputs(bigbench.load_bigbench(name, cache_dir), max_input_chars)
            if len(task.examples) >= min_examples:
                tasks.append(task)
                if parent != "natural_instructions":
                    break
    return tasks


def split_groups(tasks: list[PlannedTask], heldout: int, seed: int, kind: str) -> list[PlannedTask]:
    """Assign whole groups to held-out (seeded order) until at least ``heldout`` tasks are held out."""
    groups = sorted({t.group for t in tasks})
    random.Random(f"dod-split:{kind}:{seed}").shuffle(groups)
    chosen: set[str] = set()
    count = 0
    for g in groups:
        if count >= heldout:
            break
        chosen.add(g)
        count += sum(t.group == g for t in tasks)
    return [replace(t, split="heldout" if t.group in chosen else "train") for t in tasks]


def plan_general(cache_dir: Path, seed: int = 0, heldout: int = 30, max_tasks: int | None = None,
                 min_examples: int = 40, max_input_chars: int | None = 400) -> list[PlannedTask]:
    tasks = general_candidates(cache_dir, seed, min_examples, max_input_chars)
    if max_tasks is not None and len(tasks) > max_tasks:
        tasks = random.Random(f"dod-general-cap:{seed}").sample(tasks, max_tasks)
    planned = []
    for task in sorted(tasks, key=lambda t: t.name):
        reference, source = reference_for(task)
        if reference:
            planned.append(PlannedTask(task.name, "general", _group_of(task.name), "train", reference, source,
                                       task.labels))
    if len(planned) <= heldout:
        raise Soft2HardError(f"only {len(planned)} general tasks are usable; ask for fewer than {heldout} held out")
    return split_groups(planned, heldout, seed, "general")


def heldout_category_pool(seed: int = 0, heldout_categories: int = 16) -> tuple[random.Random, list[str]]:
    """The held-out word categories of a split seed (drawn first, before any task is looked at), and the seeded
    generator that :func:`plan_classification` goes on drawing label sets from."""
    return _draw_heldout(list(categories.categories()), heldout_categories, f"dod-classification:{seed}", 2,
                         "heldout_categories")


def _draw_heldout(names: list[str], count: int, key: str, margin: int, what: str) -> tuple[random.Random, list[str]]:
    """``count`` of ``names`` drawn with a generator seeded by ``key`` (which goes on drawing label sets); at
    least ``margin`` names on each side, so that both splits can make label sets."""
    if not margin <= count <= len(names) - margin:
        raise Soft2HardError(f"{what} must be between {margin} and {len(names) - margin}")
    rng = random.Random(key)
    return rng, sorted(rng.sample(names, count))


def plan_compositional(seed: int = 0, heldout_groups: int = 5, heldout_categories: int = 16,
                       forced_heldout_groups: frozenset[str] = frozenset()) -> list[PlannedTask]:
    """The compositional tasks (:mod:`soft2hard.tasks.compositional`), every instruction a reference.

    A task about word categories is held out when all its categories are held-out ones (the same categories as
    :func:`plan_classification` of this seed), trains when none is, and is left out otherwise; when its labels
    are the category names it is a classification entry, so they join the held-out label check. Of the other tasks' groups (a family, or a
    ``gen/*`` twin's group) ``heldout_groups`` are held out whole (seeded), plus ``forced_heldout_groups`` (e.g.
    the groups of an older bank's held-out tasks, so that no training task shares one)."""
    held = set(heldout_category_pool(seed, heldout_categories)[1])
    by_category, rest = [], []
    for name in compositional.compositional_names():
        task = compositional.load_compositional(name)
        texts = tuple(task.metadata["instructions"])
        cats = compositional.categories_of(name)
        named = bool(cats) and set(task.labels or ()) == set(cats)  # the labels are the category names
        entry = PlannedTask(name, "classification" if named else "general", compositional.group_of(name), "train",
                            texts[0], "generator", task.labels, references=texts)
        if not cats:
            rest.append(entry)
        elif set(cats) <= held:
            by_category.append(replace(entry, split="heldout"))
        elif not set(cats) & held:
            by_category.append(entry)
    groups = sorted({t.group for t in rest} - set(forced_heldout_groups))
    random.Random(f"dod-split:compositional:{seed}").shuffle(groups)
    held_groups = set(forced_heldout_groups) | set(groups[:heldout_groups])
    rest = [replace(t, split="heldout" if t.group in held_groups else "train") for t in rest]
    return sorted(rest + by_category, key=lambda t: t.name)


def plan_classification(seed: int = 0, train: int = 60, heldout: int = 30,
                        heldout_categories: int = 16) -> list[PlannedTask]:
    rng, held_pool = heldout_category_pool(seed, heldout_categories)
    return _label_set_tasks(list(categories.categories()), held_pool, rng, train, heldout)


def plan_large_classification(seed: int = 0, train: int = 200, heldout: int = 30,
                              heldout_categories: int = 40) -> list[PlannedTask]:
    """Word-category tasks over the larger inventory: ``heldout_categories`` of its categories are drawn first
    (seeded, before any task is looked at) and only they make the held-out label sets; the rest make ``train``."""
    names = list(categories.large_categories())
    rng, held_pool = _draw_heldout(names, heldout_categories, f"dod-classification-large:{seed}", 4,
                                   "large-inventory held-out categories")
    # "celestial body" would teach the held-out label "body" of plan_classification's split of this seed
    small_held = heldout_category_pool(seed)[1]
    spoilt = {c for c in names if any(mentions(categories.label_of(c), s) for s in small_held)}
    return _label_set_tasks(names, held_pool, rng, train, heldout, unusable=spoilt)


def _label_set_tasks(names: list[str], held_pool: list[str], rng: random.Random, train: int,
                     heldout: int, unusable: set[str] = frozenset()) -> list[PlannedTask]:
    """``train`` label sets from the categories outside ``held_pool`` (and ``unusable``) and ``heldout`` from
    those inside it."""
    train_pool = [c for c in names if c not in held_pool and c not in unusable]
    taken: set[frozenset[str]] = set()
    out = []
    for split, pool, count in (("train", train_pool, train), ("heldout", held_pool, heldout)):
        for chosen in categories.sample_label_sets(pool, count, rng, taken=taken):
            name = categories.category_task_name(chosen)
            labels = tuple(categories.label_of(c) for c in chosen)
            out.append(PlannedTask(name, "classification", name, split, label_reference(labels), "labels", labels))
    return out


def mentions(text: str, word: str) -> bool:
    """Whether ``text`` contains ``word`` as a whole word, or its plural in -s/-es (case-insensitive): "Identify
    the language" and "language models" mention ``language``; "languages" does too; "multilingual" does not."""
    return re.search(rf"(?<!\w){re.escape(word)}(?:e?s)?(?!\w)", text, flags=re.IGNORECASE) is not None


def _target_texts(task) -> tuple[str, ...]:
    """What translator training shows of a task: its reference and paraphrases (and a distilled prompt's teacher
    text) and its label words. Works on planned tasks and manifest entries alike."""
    texts = (task.reference, *(getattr(task, "references", None) or ()), getattr(task, "teacher_prompt", None),
             *(task.labels or ()))
    return tuple(t for t in texts if t)


def _heldout_labels(tasks) -> list[str]:
    return sorted({label for t in tasks if t.split == "heldout" and t.kind == "classification"
                   for label in (t.labels or ())})


def label_leaks(tasks) -> dict[str, list[str]]:
    """Held-out classification label -> the training tasks whose target texts mention it."""
    train = [t for t in tasks if t.split == "train"]
    found: dict[str, list[str]] = {}
    for label in _heldout_labels(tasks):
        hits = [t.name for t in train if any(mentions(text, label) for text in _target_texts(t))]
        if hits:
            found[label] = hits
    return found


def heldout_label_leaks(planned) -> list[str]:
    """Held-out classification labels that some training task's target text mentions (must be empty).

    A target text is anything translator training emits for a training task of any kind: its reference (the
    instruction of a general task, the label set of a classification task, a distilled prompt's compressed text)
    and its label words; a mention is a whole-word, case-insensitive match of the label or its plural
    (:func:`mentions`). So the label "language" leaks through the general reference "Identify the language a
    given sentence is written in.", not only through a training label set that contains it."""
    return sorted(label_leaks(planned))


def drop_leaking_train_tasks(planned: list[PlannedTask]) -> list[PlannedTask]:
    """Remove every training task whose target text mentions a held-out classification label (e.g.
    gen/fruit_or_animal when 'fruit' is a held-out category, bigbench/language_identification when 'language'
    is), so that :func:`heldout_label_leaks` of the result is empty.

    The training task goes, not the held-out label set: the held-out categories are the experiment (labels the
    translator has never been trained to emit), drawn before any general task is looked at, and dropping the
    label sets that contain a category would thin out or empty the held-out set, while the training side has
    many interchangeable tasks. A distilled prompt of a dropped general task goes with it (same reference)."""
    leaking = {name for names in label_leaks(planned).values() for name in names}
    return [t for t in planned if not (t.split == "train" and t.name in leaking)]


def _split_group(t) -> str:
    """The group a task of a plan or manifest splits by now (a stored group may predate a grouping rule)."""
    if t.kind == "classification":
        return t.group
    return _group_of(getattr(t, "inputs", None) or t.name.removeprefix(DISTILLED_PREFIX))


def leaking_train_tasks(tasks) -> dict[str, str]:
    """Training task name -> why it would spoil a held-out test: its target texts mention a held-out label, or it
    shares a split group with a held-out task. Training on the others leaves :func:`heldout_leaks` empty; this is
    what a translator trained on several banks at once drops (each bank's split alone does not see the others')."""
    tasks = list(tasks)
    reasons = {name: f"mentions the held-out label {label!r}" for label, names in label_leaks(tasks).items()
               for name in names}
    held_groups = {_split_group(t): t.name for t in tasks if t.split == "heldout"}
    for t in tasks:
        group = _split_group(t) if t.split == "train" and t.name not in reasons else None
        if group in held_groups:
            reasons[t.name] = f"shares group {group!r} with the held-out {held_groups[group]}"
    return reasons


def heldout_leaks(tasks) -> dict[str, str]:
    """Held-out tasks of a plan or manifest (:class:`PlannedTask` or manifest ``TaskEntry`` objects) that are not
    clean held-out tests of the translator, each with the reason. Empty for a plan made now, except an explicit
    plan whose ``gen/*`` tasks had to be split task by task (:func:`plan_explicit`):

    - a classification task whose label words some training target text mentions (:func:`heldout_label_leaks`);
    - a task whose split group under the current grouping (:func:`_group_of`; e.g. a ``gen/*`` template family)
      also holds a training task. Plans made before a grouping rule existed keep their stored groups, so this
      recomputes the group from the task (a distilled prompt: from the task whose inputs it was tuned on).
    """
    tasks = list(tasks)
    by_label = label_leaks(tasks)
    train_groups: dict[str, list[str]] = {}
    for t in tasks:
        if t.split == "train":
            train_groups.setdefault(_split_group(t), []).append(t.name)
    reasons: dict[str, str] = {}
    for t in tasks:
        if t.split != "heldout":
            continue
        why = []
        labels = [x for x in (t.labels or ()) if t.kind == "classification" and x in by_label]
        if labels:
            why.append("labels " + "; ".join(f"{x!r} in the training targets of {', '.join(_short(by_label[x]))}"
                                             for x in labels))
        g = _split_group(t)
        if g in train_groups:
            why.append(f"group {g!r} also holds training tasks {', '.join(_short(train_groups[g]))}")
        if why:
            reasons[t.name] = "; ".join(why)
    return reasons


def _short(names: list[str], n: int = 3) -> list[str]:
    return names[:n] + ([f"... ({len(names) - n} more)"] if len(names) > n else [])


def plan_explicit(names: list[str], cache_dir: Path, seed: int = 0, heldout: int = 1) -> list[PlannedTask]:
    """A DoD over the named tasks: ``cat/...`` tasks are classification (reference = labels), others general."""
    from soft2hard.tasks import get_task

    planned = []
    for name in names:
        task = get_task(name, cache_dir)
        if name.startswith(categories.PREFIX):
            planned.append(PlannedTask(task.name, "classification", task.name, "train", label_reference(task.labels),
                                       "labels", task.labels))
        else:
            reference, source = reference_for(task)
            texts = tuple(task.metadata.get("instructions") or ()) or None  # a comp/* task states itself 3+ ways
            planned.append(PlannedTask(task.name, "general", _group_of(task.name), "train", reference, source,
                                       task.labels, references=texts))
    if len({t.group for t in planned}) <= heldout:
        # too few template families among the named gen/* tasks: split them one by one, and say so
        per_task = [replace(t, group=t.name) if t.name.startswith(generated.PREFIX) else t for t in planned]
        if len({t.group for t in per_task}) <= heldout:
            raise Soft2HardError(f"{len(planned)} tasks cannot leave {heldout} held out and some for training")
        logger.warning("warning: the named gen/* tasks share template families (%s), which cannot all stay on "
                       "one side of a split that holds out %d group(s): splitting them task by task, so held-out "
                       "and training references may be near-copies", ", ".join(sorted({t.group for t in planned
                       if t.name.startswith(generated.PREFIX)})), heldout)
        planned = per_task
    return split_groups(planned, heldout, seed, "explicit")


def plan_distilled(general: list[PlannedTask]) -> list[PlannedTask]:
    """One distilled prompt per general task: teacher = its reference text, inputs = its inputs, same split."""
    return [replace(t, name=DISTILLED_PREFIX + t.name, kind="distilled", inputs=t.name, teacher_prompt=t.reference,
                    reference_source=f"distilled:{t.reference_source}", labels=None)
            for t in general if t.kind == "general"]


def load_instructions(path: Path) -> tuple[tuple[str, str], ...]:
    """``(inputs, text)`` pairs from a JSON-lines file of ``{"inputs": TASK, "text": INSTRUCTION}`` objects."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise Soft2HardError(f"cannot read instructions file {path}: {err}") from None
    pairs = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise Soft2HardError(f"{path}:{i}: invalid JSON ({err.msg})") from None
        if not (isinstance(obj, dict) and isinstance(obj.get("inputs"), str) and isinstance(obj.get("text"), str)
                and obj["inputs"].strip() and obj["text"].strip()):
            raise Soft2HardError(f"{path}:{i}: expected an object with non-empty strings 'inputs' (a task) and "
                                 "'text' (the instruction)")
        pairs.append((obj["inputs"].strip(), obj["text"].strip()))
    if not pairs:
        raise Soft2HardError(f"{path}: no instructions (one JSON object per line)")
    if len(set(pairs)) != len(pairs):
        raise Soft2HardError(f"{path}: an (inputs, text) pair appears twice")
    return tuple(pairs)


def plan_instructions(pairs: tuple[tuple[str, str], ...], planned: list[PlannedTask]) -> list[PlannedTask]:
    """One distilled prompt per extra instruction, on the inputs of a planned general task and in its split (so a
    held-out task's inputs never train the translator); the reference is the instruction itself."""
    general = {t.name: t for t in planned if t.kind == "general"}
    out = []
    for inputs, text in pairs:
        source = general.get(inputs)
        if source is None:
            raise Soft2HardError(f"instruction inputs {inputs!r} is not a general task of this DoD; use one of "
                                 f"its general tasks (see plan.json) or add it with --tasks")
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:10]
        out.append(replace(source, name=f"{DISTILLED_PREFIX}{inputs}/text-{digest}", kind="distilled", inputs=inputs,
                           teacher_prompt=text, reference=text, reference_source="instructions", labels=None))
    return out
