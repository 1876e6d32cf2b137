"""Atomic writes (a writer killed at any point leaves the old or the new version) and the resume-settings rule."""

import pytest

from soft2hard import atomic
from soft2hard.errors import Soft2HardError
from soft2hard.runs import changed_settings


def test_a_kill_between_the_two_renames_of_a_directory_keeps_the_old_copy(tmp_path):
    (tmp_path / ".run.old").mkdir()  # `directory` moved the target aside ...
    (tmp_path / ".run.old" / "a.json").write_text('{"v": 1}')
    (tmp_path / ".run.x1y2.tmp").mkdir()  # ... and was killed before the new copy took its place
    (tmp_path / ".run.x1y2.tmp" / "a.json").write_text('{"v": 2}')
    assert atomic.remove_stale(tmp_path) == 1
    assert atomic.read_json(tmp_path / "run" / "a.json") == {"v": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_stale_temporaries_are_removed_and_finished_files_kept(tmp_path):
    atomic.write_json(tmp_path / "done.json", {"ok": True})
    (tmp_path / ".done.json.abc.tmp").write_text("{half")
    (tmp_path / ".ckpt.old").mkdir()  # the new copy exists: the old one is garbage
    (tmp_path / "ckpt").mkdir()
    assert atomic.remove_stale(tmp_path) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "done.json"]


def test_changed_settings_names_every_differing_key_except_the_allowed_ones(tmp_path):
    stored = {"lr": 0.1, "steps": 10, "old_only": 1}
    wanted = {"lr": 0.2, "steps": 20, "new_only": 2}
    assert changed_settings(stored, wanted, tmp_path / "c.json") == ["lr", "new_only", "'old_only'", "steps"]
    assert changed_settings(stored, wanted, tmp_path / "c.json", ("steps",)) == ["lr", "new_only", "'old_only'"]
    assert changed_settings(wanted, dict(wanted), tmp_path / "c.json") == []


def test_changed_settings_refuses_a_stored_file_that_is_not_an_object(tmp_path):
    with pytest.raises(Soft2HardError, match="c.json: expected a JSON object"):
        changed_settings([1, 2], {"lr": 1}, tmp_path / "c.json")
