"""``soft2hard optimize``: single runs of both methods, the sweep table/plot, and one-line errors."""

import json

import torch

from soft2hard.cli import main
from soft2hard.prompts import SoftPrompt


def test_pez_sweep_writes_table_plot_and_faithfulness(tmp_path, tiny_llama_dir, capsys):
    SoftPrompt(torch.randn(3, 64) * 0.02, model=str(tiny_llama_dir)).save(tmp_path / "soft")
    code = main(["optimize", "--method", "pez", "--model", str(tiny_llama_dir), "--task", "gen/number_parity",
                 "--out", str(tmp_path / "sweep"), "--tokens", "3", "--steps", "2", "--eval-every", "2",
                 "--sweep", "0,1", "--soft-prompt", str(tmp_path / "soft"), "--quiet"])
    assert code == 0
    out = capsys.readouterr().out
    rows = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert [r["weight"] for r in rows] == [0.0, 1.0]
    for r in rows:
        assert len(r["ids"]) == 3 and r["perplexity"] > 1
        assert 0 <= r["faithfulness_agreement"] <= 1 and r["faithfulness_mean_kl"] >= 0
    assert (tmp_path / "sweep" / "sweep.png").stat().st_size > 1000
    assert "| weight |" in out and (tmp_path / "sweep" / "w_1" / "result.json").exists()
    # a rerun reuses the finished runs
    assert main(["optimize", "--method", "pez", "--model", str(tiny_llama_dir), "--task", "gen/number_parity",
                 "--out", str(tmp_path / "sweep"), "--tokens", "3", "--steps", "2", "--eval-every", "2",
                 "--sweep", "0,1", "--quiet", "--json"]) == 0
    assert [r["text"] for r in json.loads(capsys.readouterr().out)] == [r["text"] for r in rows]
    # more steps continue the finished runs instead of silently reusing them; other settings are refused
    assert main(["optimize", "--method", "pez", "--model", str(tiny_llama_dir), "--task", "gen/number_parity",
                 "--out", str(tmp_path / "sweep"), "--tokens", "3", "--steps", "4", "--eval-every", "2",
                 "--sweep", "0,1", "--quiet", "--json"]) == 0
    capsys.readouterr()
    assert json.loads((tmp_path / "sweep" / "w_1" / "result.json").read_text())["steps"] == 4
    code = main(["optimize", "--method", "pez", "--model", str(tiny_llama_dir), "--task", "gen/number_parity",
                 "--out", str(tmp_path / "sweep"), "--tokens", "3", "--steps", "4", "--eval-every", "2",
                 "--sweep", "0,1", "--lr", "0.1", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "different settings" in err and "lr" in err and err.count("\n") == 1


def test_rlprompt_single_run(tmp_path, tiny_llama_dir, capsys):
    code = main(["optimize", "--method", "rlprompt", "--model", str(tiny_llama_dir), "--task", "gen/number_parity",
                 "--out", str(tmp_path / "rl"), "--tokens", "2", "--steps", "2", "--eval-every", "2", "--weight",
                 "0.5", "--quiet", "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["method"] == "rlprompt" and len(result["ids"]) == 2 and result["metric"] == "accuracy"


def test_rlprompt_cost_flags_reach_the_config_and_resume_checks_them(tmp_path, tiny_llama_dir, capsys):
    base = ["optimize", "--method", "rlprompt", "--model", str(tiny_llama_dir), "--task", "gen/number_parity",
            "--out", str(tmp_path / "rl"), "--tokens", "2", "--steps", "2", "--eval-every", "1", "--quiet"]
    assert main([*base, "--samples-per-step", "3", "--batch-size", "4", "--lr", "0.001", "--top-k", "5",
                 "--sql-loss", "path", "--reward-scale", "5"]) == 0
    config = json.loads((tmp_path / "rl" / "config.json").read_text())
    assert (config["samples_per_step"], config["batch_size"], config["lr"], config["top_k"]) == (3, 4, 0.001, 5)
    assert (config["sql_loss"], config["reward_scale"]) == ("path", 5.0)
    capsys.readouterr()
    # resuming with a different cost setting is refused, naming the setting
    code = main([*base, "--samples-per-step", "2", "--batch-size", "4", "--lr", "0.001", "--top-k", "5",
                 "--sql-loss", "path", "--reward-scale", "5", "--resume"])
    err = capsys.readouterr().err
    assert code == 2 and "samples_per_step" in err and err.count("\n") == 1


def test_bad_optimize_input_is_one_line(tmp_path, tiny_llama_dir, capsys):
    for argv, msg in [(["--sweep", "0,x"], "comma-separated numbers"), (["--weight", "2"], "weight"),
                      (["--sweep", "0,1.5"], "weight"), (["--samples-per-step", "4"], "RLPrompt setting"),
                      (["--top-k", "4"], "RLPrompt setting"), (["--reward-scale", "5"], "RLPrompt setting"),
                      (["--lr", "0"], "lr must be"), (["--batch-size", "0"], "batch_size must be")]:
        code = main(["optimize", "--method", "pez", "--task", "gen/plural", "--out", str(tmp_path / "x"), *argv])
        err = capsys.readouterr().err
        assert code == 2 and msg in err and err.count("\n") == 1
    code = main(["optimize", "--method", "rlprompt", "--model", str(tiny_llama_dir), "--task", "gen/plural",
                 "--out", str(tmp_path / "y"), "--steps", "1", "--quiet"])
    assert code == 2 and "classification" in capsys.readouterr().err
