"""Oracle and label-free selection of InSPEcT layer pairs; the describe / calibrate commands."""

import json

import pytest
import torch

from soft2hard.cli import main
from soft2hard.errors import Soft2HardError
from soft2hard.interpret.base import Description
from soft2hard.interpret.inspection import InspectConfig
from soft2hard.interpret.selection import (
    Profile,
    calibrate,
    describe_label_free,
    oracle_rank,
    parse_layers,
    parse_pairs,
    reference_text,
    score_texts,
)
from soft2hard.prompts import SoftPrompt
from soft2hard.tasks import get_task


def test_oracle_rank_orders_and_labels():
    descs = [Description("a cat sat", "inspect", (1, 1)), Description("output the plural of a noun", "inspect", (2, 1))]
    ranked = oracle_rank(descs, "Output the plural form of the noun", "rouge_l")
    assert ranked[0].layers == (2, 1) and all(d.oracle for d in ranked) and ranked[0].score > ranked[1].score


def test_class_rate_scoring_needs_labels():
    assert score_texts(["positive or negative"], "", "class_rate", ["positive", "negative"]) == [1.0]
    with pytest.raises(Soft2HardError, match="label set"):
        score_texts(["x"], "ref", "class_rate", None)


def test_reference_text_includes_labels():
    assert reference_text(get_task("gen/word_sentiment")).endswith(": negative, positive")


def test_layer_parsing():
    assert parse_layers("1-3,7") == [1, 2, 3, 7] and parse_layers("0-10:5") == [0, 5, 10]
    assert parse_pairs("3:5,10:2") == [(3, 5), (10, 2)]
    with pytest.raises(Soft2HardError, match="bad layer"):
        parse_layers("a-b")
    with pytest.raises(Soft2HardError, match="SOURCE:TARGET"):
        parse_pairs("3-5")


def test_calibrate_then_label_free(tiny_llama, tmp_path):
    torch.manual_seed(0)
    items = [(f"p{i}", torch.randn(3, tiny_llama.d_model), "Output the first letter", None) for i in range(2)]
    cfg = InspectConfig(source_layers=[0, 1], target_layers=[0, 1], max_new_tokens=5)
    profile = calibrate(tiny_llama, items, cfg, top_k=2, progress=False)
    assert len(profile.pairs) == 2 and len(profile.mean_scores) == 4
    best = max(profile.mean_scores.values())
    assert profile.mean_scores[",".join(map(str, profile.pairs[0]))] == best
    profile.save(tmp_path / "p.json")
    again = Profile.load(tmp_path / "p.json")
    assert again.pairs == profile.pairs
    descs = describe_label_free(tiny_llama, items[0][1], again, k=1)
    assert len(descs) == 1 and descs[0].layers == profile.pairs[0] and not descs[0].oracle


def test_describe_and_calibrate_cli(tmp_path, tiny_llama_dir, capsys):
    prompt_dir = tmp_path / "prompt"
    SoftPrompt(torch.randn(3, 64), model=str(tiny_llama_dir), metadata={"task": "gen/first_letter"}).save(prompt_dir)
    profile = tmp_path / "profile.json"
    code = main(["inspect", "calibrate", str(prompt_dir), "--model", str(tiny_llama_dir), "--sources", "0-1",
                 "--targets", "0-1", "--max-new-tokens", "4", "--profile", str(profile)])
    assert code == 0 and profile.exists()
    capsys.readouterr()
    assert main(["describe", str(prompt_dir), "--profile", str(profile), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["descriptions"][0]["oracle"] is False and len(out["descriptions"]) == 1
    assert main(["describe", str(prompt_dir), "--sources", "0-1", "--targets", "0-1", "--max-new-tokens", "4",
                 "--task", "gen/first_letter", "--oracle", "--heatmap", str(tmp_path / "h.png")]) == 0
    text = capsys.readouterr().out
    assert "ORACLE" in text and (tmp_path / "h.png").stat().st_size > 1000
    assert main(["describe", str(prompt_dir), "--method", "projection", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["descriptions"][0]["method"] == "projection"


@pytest.mark.parametrize("argv, needle", [
    (["--oracle"], "needs a reference"),
    (["--sources", "0-9"], "out of range"),
    (["--pairs", "0:1,2"], "SOURCE:TARGET"),
    (["--profile", "/nonexistent/p.json"], "calibrate"),
])
def test_describe_bad_input(tmp_path, tiny_llama_dir, capsys, argv, needle):
    SoftPrompt(torch.randn(3, 64), model=str(tiny_llama_dir)).save(tmp_path / "p")
    code = main(["describe", str(tmp_path / "p"), *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and needle in err


def test_shipped_profile_for_smollm2(tmp_path):
    from soft2hard.interpret.selection import find_profile

    path = find_profile(tmp_path, "smollm2-135m")  # no user profile in tmp_path: the shipped one
    profile = Profile.load(path)
    assert profile.model == "smollm2-135m" and len(profile.pairs) >= 1 and profile.n_prompts >= 5
    assert all(1 <= s <= 29 and 1 <= t <= 29 for s, t in profile.pairs)
    profile.config()  # its settings form a valid InspectConfig
    user = tmp_path / "profiles" / "smollm2-135m.json"
    profile.save(user)
    assert find_profile(tmp_path, "smollm2-135m") == user
