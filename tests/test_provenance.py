"""Provenance of the interpreters' training sets (claim 9): the shipped InSPEcT profile and translator record the
tasks they saw, and an evaluation labels results on those tasks ``seen_in_training`` (no models needed here;
tests/test_architectures.py checks that ``calibrate`` and ``train_translator`` record them)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from soft2hard import atomic
from soft2hard.demo import seen_conditions
from soft2hard.errors import Soft2HardError
from soft2hard.evaluation import run
from soft2hard.evaluation.source import EvalTask, seen_in_training, slug
from soft2hard.interpret.selection import SHIPPED_PROFILES, Profile
from soft2hard.interpret.translator import SHIPPED_TRANSLATORS, TRANSLATOR_META, Translator
from soft2hard.tasks import get_task

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_profile_records_its_calibration_tasks():
    profile = Profile.load(SHIPPED_PROFILES / "smollm2-135m.json")
    assert len(profile.calibration_tasks) == profile.n_prompts == 6
    # each task is the one its calibration prompt folder (runs/table/<slug>) was tuned on
    folders = sorted(p.split()[0].rpartition("/")[2] for p in profile.calibration_prompts)
    assert folders == sorted(slug(t) for t in profile.calibration_tasks)
    for task in profile.calibration_tasks:
        assert _loads_or_lacks_bigbench(task)
    assert profile.saw("gen/plural") and not profile.saw("gen/word_sentiment")  # the demo's task was calibrated on
    assert "recovered" in profile.notes


def _loads_or_lacks_bigbench(name: str) -> bool:
    """The task loads under its name; a BIG-bench task may instead fail only because the machine has no copy of
    the BIG-bench sdist (PyPI stopped serving it: tests/test_bigbench.py), never because the name is unknown."""
    try:
        return get_task(name).name == name
    except Soft2HardError as err:
        return name.startswith("bigbench/") and "does not serve bigbench==1.0.0" in str(err)


def test_shipped_translator_records_its_training_tasks():
    from soft2hard.dod.manifest import Manifest

    meta = atomic.read_json(SHIPPED_TRANSLATORS / "smollm2-135m" / TRANSLATOR_META)
    banks = meta["dod"] if isinstance(meta["dod"], list) else [meta["dod"]]  # one bank, or several (sharded too)
    manifest = Manifest.load_many([ROOT / b for b in banks])
    train = sorted(t.name for t in manifest.split("train"))
    trained = meta["training_tasks"]
    assert trained == sorted(trained) and set(trained) <= set(train) and len(trained) == meta["train_tasks"]
    if len(banks) == 1 and not meta["config"].get("validation_tasks"):
        assert trained == train  # one bank, nothing set aside: every training task
    translator = Translator(lm=None, meta=meta)
    heldout = [t.name for t in manifest.split("heldout")]
    assert translator.saw(trained[0]) and not any(translator.saw(t) for t in heldout)
    assert Translator(lm=None, meta={}).training_tasks is None  # a translator from before the field: unknown


def test_seen_results_are_labelled(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        assert seen_in_training("gen/plural", "inspect", False) == {}
        assert seen_in_training("gen/plural", "inspect", True) == {"seen_in_training": True}
    assert "InSPEcT profile was calibrated on prompts of gen/plural" in caplog.text
    item = EvalTask(task=get_task("gen/plural"), reference="Give the plural.")
    seen = run._row(item, "inspect", "m", {"score": 0.5}, "text", {"text": "t", "seen_in_training": True})
    unseen = run._row(item, "translator", "m", {"score": 0.5}, "text", {"text": "t"})
    assert seen["seen_in_training"] is True and "seen_in_training" not in unseen
    md = run.markdown([{**seen, "metric": "rouge_l"}, {**unseen, "metric": "rouge_l"}])
    assert "Not held out (seen_in_training): inspect on gen/plural" in md
    assert "Not held out" not in run.markdown([{**unseen, "metric": "rouge_l"}])
    (tmp_path / "texts.json").write_text(json.dumps({"gen/plural": {"texts": {
        "inspect": {"text": "a", "seen_in_training": True}, "translator": {"text": "b"}}}}))
    assert seen_conditions(tmp_path) == ["inspect"]
