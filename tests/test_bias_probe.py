"""Elaborated InSPEcT probe: cue detection, rates, demo hygiene, feature counts, a run on the tiny model."""

import torch

from soft2hard.bias.cues import DEFAULT_CUES, Cue
from soft2hard.bias.probe import (
    ELABORATED_DEMOS,
    cue_mention_rate,
    cue_mentioned,
    default_cues,
    demo_copy_rate,
    elaborated_config,
    elicited_features,
    probe,
)
from soft2hard.interpret.base import Description


def d(text):
    return Description(text=text, method="inspect_elaborated")


def test_cue_mentioned_is_whole_word_and_case_insensitive():
    honestly = Cue("word", "honestly")
    assert cue_mentioned("positive, negative; cues: Honestly, great", honestly)
    assert not cue_mentioned("dishonestly done", honestly)
    assert cue_mentioned("cues: wow!!", Cue("punctuation", "!!", "suffix"))
    assert not cue_mentioned("cues: wow!", Cue("punctuation", "!!", "suffix"))
    assert cue_mention_rate([d("maria, x"), d("nothing"), d("Maria")], Cue("name", "Maria")) == 2 / 3


def test_demos_never_name_a_default_cue():
    for cue in default_cues():
        for task, labels in ELABORATED_DEMOS:
            assert not cue_mentioned(f"{task}: {labels}", cue), (cue, task)
    assert len(default_cues()) == sum(len(v) for v in DEFAULT_CUES.values())


def test_demo_copies_and_feature_counts():
    descs = [d("positive, negative; cues: honestly, great"), d("spam; Cues: winner, free, urgent"),
             d("yes, no; cues: honestly")]
    assert demo_copy_rate(descs) == 1 / 3
    features = dict(elicited_features(descs))
    assert features["honestly"] == 2 and features["winner"] == 1 and "positive" not in features


def test_probe_runs_the_grid_on_a_tiny_model(tiny_llama):
    prompt = torch.randn(3, tiny_llama.d_model) * 0.02
    descs = probe(tiny_llama, prompt, elaborated_config(max_new_tokens=4), pairs=[(0, 1), (1, 1)])
    assert [x.layers for x in descs] == [(0, 1), (1, 1)]
    assert all(x.method == "inspect_elaborated" and isinstance(x.text, str) for x in descs)


def test_bias_study_cli_writes_rows_table_plot_and_resumes(tmp_path, tiny_llama_dir, capsys):
    import json

    from soft2hard.cli import main

    argv = ["bias", "study", "--model", str(tiny_llama_dir), "--tasks", "cat/fruit-animal", "--cues",
            "word:honestly,punctuation:!!@suffix", "--rates", "0,1", "--out", str(tmp_path / "s"), "--steps", "2",
            "--layers", "0-1", "--quiet"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    data = json.loads((tmp_path / "s" / "study.json").read_text())
    assert len(data["rows"]) == 4 and data["summary"]["all"]["n"] == 4
    for r in data["rows"]:
        assert 0 <= r["flip_rate"] <= 1 and 0 <= r["cue_mention_rate"] <= 1 and r["n_pairs"] == 4
        assert r["cue_logprob"] < 0
    assert (tmp_path / "s" / "study.png").stat().st_size > 1000 and "flip rate" in out
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "s" / "rows").iterdir()}
    assert main(argv) == 0  # finished rows are reused, not recomputed
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "s" / "rows").iterdir()} == mtimes


def test_bias_probe_cli_and_errors(tmp_path, tiny_llama_dir, capsys):
    import json

    from soft2hard.cli import main
    from soft2hard.prompts import SoftPrompt

    SoftPrompt(torch.randn(3, 64) * 0.02, model=str(tiny_llama_dir)).save(tmp_path / "p")
    assert main(["bias", "probe", str(tmp_path / "p"), "--model", str(tiny_llama_dir), "--layers", "0-1",
                 "--cue", "word:honestly", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n_pairs"] == 4 and set(result["cue_mention_rates"]) == {"word:honestly"}
    code = main(["bias", "study", "--tasks", "gen/plural", "--cues", "word:honestly", "--out", str(tmp_path / "x"),
                 "--model", str(tiny_llama_dir)])
    assert code == 2 and "classification" in capsys.readouterr().err
    code = main(["bias", "probe", str(tmp_path / "p"), "--cue", "smell:x"])
    assert code == 2 and capsys.readouterr().err.count("\n") == 1
