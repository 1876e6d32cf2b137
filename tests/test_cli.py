"""The command line: help, the JSON contract, and one-line errors with exit status 2 for every bad input."""

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from soft2hard.cli import COMMANDS, build_parser, main
from soft2hard.prompts import SoftPrompt


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *needles):
    assert code == 2
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def _subcommands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command path of ``parser`` (``("tune",)``, ``("dod", "build")``, ...), read from its subparsers."""
    paths = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                paths += [(*prefix, name), *_subcommands(sub, (*prefix, name))]
    return paths


COMMAND_PATHS = _subcommands(build_parser())
TOP_LEVEL = sorted({p[0] for p in COMMAND_PATHS})


def test_every_command_has_a_handler_and_every_documented_command_exists():
    assert set(TOP_LEVEL) == set(COMMANDS)
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    first_cells = [line.split("|")[1] for line in readme.splitlines() if line.startswith("| `soft2hard ")]
    documented = {tuple(m.split()) for cell in first_cells
                  for m in re.findall(r"`(?:soft2hard )?([a-z][a-z-]*(?: [a-z]+)?)", cell)}
    assert len(documented) >= 15, documented
    assert documented <= set(COMMAND_PATHS), documented - set(COMMAND_PATHS)


def test_help_lists_every_command():
    result = subprocess.run([sys.executable, "-m", "soft2hard.cli", "--help"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    listed = set(re.findall(r"^ {4}(\S+)", result.stdout, flags=re.M))  # the COMMAND lines of the help
    missing = [c for c in TOP_LEVEL if c not in listed]
    assert not missing, f"not in soft2hard --help: {missing}\n{result.stdout}"


@pytest.mark.parametrize("path", COMMAND_PATHS, ids=" ".join)
def test_every_command_has_help(capsys, path):
    with pytest.raises(SystemExit) as exit_info:
        main([*path, "--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0
    assert out.startswith(f"usage: soft2hard {' '.join(path)}"), out[:200]
    subs = [p[len(path)] for p in COMMAND_PATHS if p[:len(path)] == path and len(p) == len(path) + 1]
    assert all(s in out for s in subs), (subs, out)


def test_tasks_list_json_contract(capsys):
    code, out, _ = run_cli(capsys, "tasks", "list", "--source", "generated", "--json")
    assert code == 0
    rows = json.loads(out)
    assert len(rows) >= 10
    for row in rows:
        assert {"name", "source", "answer_type", "n_examples"} <= set(row)
        assert row["answer_type"] in ("generation", "classification")
    code, out, _ = run_cli(capsys, "tasks", "show", rows[0]["name"])
    assert code == 0 and "description" in out
    code, out, _ = run_cli(capsys, "tasks", "list", "--source", "generated")  # the plain table, one task a line
    lines = out.splitlines()
    assert code == 0 and len(lines) == len(rows)
    assert lines[0].split()[:3] == [rows[0]["name"], rows[0]["answer_type"], str(rows[0]["n_examples"])]


def test_models_lists_builtins(capsys):
    code, out, _ = run_cli(capsys, "models", "--json")
    names = {r["name"] for r in json.loads(out)}
    assert code == 0 and {"smollm2-135m", "gemma3-270m"} <= names


def test_unknown_model(capsys, tmp_path):
    code, _, err = run_cli(capsys, "tune", "--model", "no-such-model", "--task", "gen/first_letter",
                           "--out", str(tmp_path / "run"))
    assert_one_line_error(code, err, "unknown model", "no-such-model")
    assert not (tmp_path / "run").exists()


def test_unknown_task_suggests(capsys, tmp_path):
    code, _, err = run_cli(capsys, "tune", "--task", "gen/first_leter", "--out", str(tmp_path / "run"))
    assert_one_line_error(code, err, "gen/first_letter")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("content, needle", [
    (None, "not found"),
    ('{"input": "a", "output": "b"}\n{oops\n', ":2"),
    ("", "empty"),
    ('{"input": "a"}\n', "output"),
])
def test_bad_task_files(capsys, tmp_path, content, needle):
    path = tmp_path / "data.jsonl"
    if content is not None:
        path.write_text(content)
    code, _, err = run_cli(capsys, "tune", "--task", str(path), "--out", str(tmp_path / "run"))
    assert_one_line_error(code, err, "data.jsonl", needle)
    assert not (tmp_path / "run").exists()


def test_bad_tuning_option(capsys, tmp_path):
    code, _, err = run_cli(capsys, "tune", "--task", "gen/first_letter", "--tokens", "0", "--out", str(tmp_path / "r"))
    assert_one_line_error(code, err, "n_tokens")


def test_prompt_width_mismatch(capsys, tmp_path, tiny_llama_dir):
    SoftPrompt(torch.zeros(3, 65)).save(tmp_path / "p")
    code, _, err = run_cli(capsys, "score", str(tmp_path / "p"), "--model", str(tiny_llama_dir),
                           "--task", "gen/first_letter")
    assert_one_line_error(code, err, "[n, 64]")
    code, _, err = run_cli(capsys, "info", str(tmp_path / "p"), "--model", str(tiny_llama_dir))
    assert_one_line_error(code, err, "[n, 64]")


def test_bad_prompt_files_exit_2(capsys, tmp_path):
    save_file({"x": torch.tensor([[0.0, float("nan")]])}, tmp_path / "nan.safetensors")
    torch.save(torch.zeros(2, 2), tmp_path / "p.pt")
    (tmp_path / "junk.safetensors").write_bytes(b"not a tensor file")
    for name, needle in [("nan.safetensors", "NaN"), ("p.pt", "pickle"), ("junk.safetensors", "safetensors")]:
        code, _, err = run_cli(capsys, "info", str(tmp_path / name))
        assert_one_line_error(code, err, name, needle)


def test_score_and_info_on_a_tuned_prompt(capsys, tmp_path, tiny_llama_dir):
    code, out, err = run_cli(capsys, "tune", "--model", str(tiny_llama_dir), "--task", "gen/first_letter",
                             "--tokens", "3", "--steps", "4", "--eval-every", "2", "--out", str(tmp_path / "run"),
                             "--quiet")
    assert code == 0, err
    assert (tmp_path / "run" / "adapter_config.json").exists() and (tmp_path / "run" / "metrics.json").exists()
    code, out, _ = run_cli(capsys, "score", str(tmp_path / "run"), "--model", str(tiny_llama_dir),
                           "--task", "gen/first_letter", "--max-examples", "5", "--json")
    assert code == 0 and json.loads(out)["n"] == 5
    code, out, _ = run_cli(capsys, "info", str(tmp_path / "run"), "--json")
    assert code == 0 and json.loads(out)["n_tokens"] == 3


def test_usage_error_is_one_line():
    result = subprocess.run([sys.executable, "-m", "soft2hard.cli", "tune", "--bogus"], capture_output=True, text=True)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
