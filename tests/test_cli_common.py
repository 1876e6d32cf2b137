"""CLI plumbing (cli/common.py and main): the shared model options, the split seed ``score`` uses, a closed
stdout pipe and transformers' FutureWarnings (audit issue 19, items 2, 3 and 5)."""

import argparse
import dataclasses
import json
import subprocess
import sys
import types
import warnings
from pathlib import Path

import pytest
import torch

from soft2hard.cli import build_parser, main
from soft2hard.prompts import SoftPrompt
from soft2hard.tasks import get_task

MODEL_OPTIONS = ("--device", "--dtype", "--amp")


def _parsers(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()):
    """(command path, parser) for every (sub)command of ``parser``."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*prefix, name), sub
                yield from _parsers(sub, (*prefix, name))


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {s for a in parser._actions for s in a.option_strings}


PARSERS = dict(_parsers(build_parser()))
# every command that takes --model, and the two that load the model their DoD names
MODEL_COMMANDS = sorted({p for p, sub in PARSERS.items() if "--model" in _options(sub)}
                        | {("translator", "train"), ("translator", "eval")})
NOT_YET: dict = {}  # commands that cannot honour an option yet (none now)


def test_the_model_commands_are_found():
    assert len(MODEL_COMMANDS) >= 12, MODEL_COMMANDS
    assert {("tune",), ("info",), ("score",), ("evaluate",), ("dod", "build")} <= set(MODEL_COMMANDS)


@pytest.mark.parametrize("path", [pytest.param(p, marks=pytest.mark.xfail(reason=NOT_YET[p], strict=True))
                                  if p in NOT_YET else p for p in MODEL_COMMANDS], ids=" ".join)
def test_every_model_command_lists_device_dtype_and_amp(capsys, path):
    with pytest.raises(SystemExit) as exit_info:
        main([*path, "--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0
    missing = [o for o in MODEL_OPTIONS if o not in out]
    assert not missing, f"soft2hard {' '.join(path)} --help lacks {missing}"


def test_evaluate_target_has_its_own_model_options():
    assert {"--target-device", "--target-dtype", "--target-amp"} <= _options(PARSERS[("evaluate",)])


class Loaded(Exception):
    """Raised by the recording load_model: the options reached it, nothing else needs to run."""


@pytest.fixture
def recorded_loads(monkeypatch):
    import soft2hard.models

    calls = []

    def load_model(name, **kwargs):
        calls.append((name, kwargs))
        raise Loaded

    monkeypatch.setattr(soft2hard.models, "load_model", load_model)
    return calls


OPTS = ["--device", "cpu", "--dtype", "bfloat16", "--amp", "bfloat16"]


def _assert_options_reached(calls):
    assert calls, "load_model was not called"
    _, kwargs = calls[0]
    assert (kwargs["device"], kwargs["dtype"], kwargs["amp"]) == ("cpu", "bfloat16", "bfloat16"), kwargs


def test_info_model_takes_the_model_options(tmp_path, recorded_loads):
    SoftPrompt(torch.randn(3, 8), "m").save(tmp_path / "p")
    with pytest.raises(Loaded):
        main(["info", str(tmp_path / "p"), "--model", "some/model", *OPTS])
    _assert_options_reached(recorded_loads)


def test_translator_eval_takes_the_model_options(tmp_path, monkeypatch, recorded_loads):
    import soft2hard.dod.manifest

    manifest = types.SimpleNamespace(model="some/model", tasks=[], split=lambda name: [], clean_heldout=lambda: [])
    monkeypatch.setattr(soft2hard.dod.manifest.Manifest, "load", staticmethod(lambda path: manifest))
    with pytest.raises(Loaded):
        main(["translator", "eval", "--dod", str(tmp_path), "--out", str(tmp_path / "r"), *OPTS])
    _assert_options_reached(recorded_loads)


def test_dod_build_takes_the_model_options(tmp_path, recorded_loads):
    with pytest.raises(Loaded):
        main(["dod", "build", "--out", str(tmp_path / "d"), "--model", "some/model", "--tasks", "gen/plural",
              "--kinds", "general", "--general-heldout", "0", "--classification-train", "0",
              "--classification-heldout", "0", "--workers", "0", "--steps", "2", "--eval-every", "2", *OPTS])
    _assert_options_reached(recorded_loads)


# --- score uses the split seed the prompt was tuned with --------------------------------------------------

TASK = "gen/plural"


@pytest.fixture
def scored(monkeypatch):
    """Run ``score`` with the scoring replaced by a recorder of the examples it is given."""
    import soft2hard.scoring

    seen = []
    monkeypatch.setattr(soft2hard.scoring, "score", lambda lm, prompt, task, examples, *a, **kw:
                        seen.append([ex.input for ex in examples]) or 0.0)
    return seen


def _prompt(tmp_path, tiny_llama_dir, **meta):
    return SoftPrompt(torch.randn(2, 64), str(tiny_llama_dir), meta).save(tmp_path / "p")


def _score(capsys, path, tiny_llama_dir, *extra):
    code = main(["score", str(path), "--model", str(tiny_llama_dir), "--device", "cpu", "--task", TASK,
                 "--max-examples", "5", "--json", *extra])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out), err


def test_score_uses_the_seed_the_prompt_was_tuned_with(capsys, tmp_path, tiny_llama_dir, scored):
    path = _prompt(tmp_path, tiny_llama_dir, task=TASK, seed=3)
    result, err = _score(capsys, path, tiny_llama_dir)
    splits = get_task(TASK).splits(seed=3)
    assert result["seed"] == 3 and "warning" not in err
    assert scored[0] == [ex.input for ex in splits.test[:5]]
    train = {ex.input for ex in splits.train}
    assert not train & set(scored[0])  # seed 0's test split would hold some of these training inputs
    assert train & {ex.input for ex in get_task(TASK).splits(seed=0).test}


def test_score_warns_when_seed_differs_from_the_tuning_seed(capsys, tmp_path, tiny_llama_dir, scored):
    path = _prompt(tmp_path, tiny_llama_dir, task=TASK, seed=3)
    result, err = _score(capsys, path, tiny_llama_dir, "--seed", "0")
    assert result["seed"] == 0 and "warning:" in err and "split seed 3" in err
    assert scored[0] == [ex.input for ex in get_task(TASK).splits(seed=0).test[:5]]
    _, err = _score(capsys, path, tiny_llama_dir, "--seed", "3")
    assert "warning" not in err


def test_score_reads_the_seed_of_a_bare_file_from_its_run_folder(capsys, tmp_path, tiny_llama_dir, scored):
    from safetensors.torch import save_file

    run = tmp_path / "run"
    run.mkdir()
    save_file({"prompt_embeddings": torch.randn(2, 64)}, str(run / "prompt.safetensors"))
    (run / "metrics.json").write_text(json.dumps({"task": TASK, "seed": 5}))
    result, _ = _score(capsys, run / "prompt.safetensors", tiny_llama_dir)
    assert result["seed"] == 5


def test_score_on_another_task_keeps_the_default_seed(capsys, tmp_path, tiny_llama_dir, scored):
    path = _prompt(tmp_path, tiny_llama_dir, task="gen/first_letter", seed=3)
    result, err = _score(capsys, path, tiny_llama_dir, "--seed", "1")
    assert result["seed"] == 1 and "warning" not in err
    result, _ = _score(capsys, path, tiny_llama_dir)
    assert result["seed"] == 0


# --- a closed stdout pipe and FutureWarnings -----------------------------------------------------------------


def test_a_closed_stdout_pipe_exits_quietly():
    """``soft2hard tasks list --json | head -1``: the reader is gone before we write (deterministically here)."""
    proc = subprocess.Popen([sys.executable, "-m", "soft2hard.cli", "tasks", "list", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # like `head` exiting after its line, before we write the rest
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 141, err
    assert "Traceback" not in err and "BrokenPipeError" not in err, err


def test_head_of_json_output_has_no_traceback():
    result = subprocess.run(f"{sys.executable} -m soft2hard.cli tasks list --json | head -1", shell=True,
                            capture_output=True, text=True, timeout=300)
    assert result.stdout.strip() == "["
    assert "Traceback" not in result.stderr and "BrokenPipeError" not in result.stderr, result.stderr


def test_a_model_command_prints_no_future_warning(tmp_path, tiny_llama_dir):
    """Generation on a tiny model (transformers warns about ``past_key_values`` there) in a fresh process, which
    shows FutureWarnings by default."""
    SoftPrompt(torch.randn(2, 64), str(tiny_llama_dir), {"task": TASK, "seed": 0}).save(tmp_path / "p")
    result = subprocess.run([sys.executable, "-m", "soft2hard.cli", "score", str(tmp_path / "p"), "--model",
                             str(tiny_llama_dir), "--device", "cpu", "--task", TASK, "--max-examples", "2"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr, result.stderr


def test_broken_pipe_in_process_returns_141(monkeypatch, capsys):
    class ClosedPipe:
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    assert main(["tasks", "list", "--json"]) == 141


def test_cli_silences_transformers_future_warnings(capsys):
    with warnings.catch_warnings():
        main(["tasks", "list", "--source", "generated", "--json"])  # installs the CLI's filters
        capsys.readouterr()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")  # what a fresh process would show...
            main(["tasks", "list", "--source", "generated", "--json"])  # ...until main filters it again
            warnings.warn_explicit("`is_gradient_checkpointing` is deprecated and will be removed in v6.",
                                   FutureWarning, "modeling_utils.py", 1, module="transformers.modeling_utils")
            warnings.warn_explicit("`past_key_values` is deprecated and will be removed in version 5.40.0 for "
                                   "`LlamaModel.forward`", FutureWarning, "module.py", 1,
                                   module="torch.nn.modules.module")  # where transformers' stacklevel=2 points
            warnings.warn_explicit("an unrelated deprecation", FutureWarning, "x.py", 1, module="soft2hard.x")
        capsys.readouterr()
    assert [str(w.message) for w in caught if w.category is FutureWarning] == ["an unrelated deprecation"]



# --- options generated from the config dataclasses (issue 20, item 5) ---------------------------------------


@dataclasses.dataclass(frozen=True)
class _Cfg:
    count: int = dataclasses.field(default=3, metadata={"help": "how many"})
    rate: float = dataclasses.field(default=0.5, metadata={"help": "share in %"})
    name: str | None = dataclasses.field(default=None, metadata={"help": "a name"})
    parts: tuple[str, ...] = dataclasses.field(default=("a", "b"), metadata={"help": "comma-separated parts"})
    where: Path | None = dataclasses.field(default=None, metadata={"help": "a folder (default: none)"})
    layers: tuple[int, ...] | None = dataclasses.field(default=None, metadata={"help": "layers"})


def test_config_options_take_type_default_and_help_from_the_fields(capsys):
    from soft2hard.cli.common import ConfigOptions, Parser

    opts = ConfigOptions(_Cfg, ("count", "rate", "name", "parts", "where", "layers"), flags={"count": "n"},
                         parsers={"layers": lambda text: tuple(int(x) for x in text.split(","))})
    p = Parser(prog="t")
    opts.add_to(p)
    assert opts.config(p.parse_args([])) == _Cfg()
    got = opts.config(p.parse_args(["--n", "4", "--rate", "0.25", "--parts", "x, y,", "--where", "d",
                                    "--layers", "1,2"]))
    assert got == _Cfg(count=4, rate=0.25, parts=("x", "y"), where=Path("d"), layers=(1, 2))
    with pytest.raises(SystemExit):
        p.parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "how many (default 3)" in text and "share in % (default 0.5)" in text and "(default a,b)" in text
    assert "a folder (default: none)" in text and "a name (default" not in text  # no default shown twice or None
    assert opts.config(p.parse_args([]), count=9).count == 9  # a given field wins, even when not an option
    with pytest.raises(TypeError, match="no field"):
        ConfigOptions(_Cfg, ("count", "nope"))


def test_the_commands_defaults_are_the_configs_defaults():
    from soft2hard.cli import evaluate as cli_evaluate
    from soft2hard.cli.common import tuning_options
    from soft2hard.evaluation import EvalConfig, TargetsConfig
    from soft2hard.tuning import TuningConfig

    tune = build_parser().parse_args(["tune", "--out", "o"])
    assert tuning_options().config(tune) == TuningConfig()
    many = build_parser().parse_args(["tune-many", "--tasks", "gen/plural", "--out", "o"])
    assert not hasattr(many, "seed") and tuning_options().config(many, seed=2) == TuningConfig(seed=2)
    ev = build_parser().parse_args(["evaluate", "--tasks", "gen/plural", "--out", "o"])
    assert cli_evaluate.eval_options().config(ev) == EvalConfig()
    local, api = cli_evaluate.targets_options()
    assert TargetsConfig(**local.values(ev), **api.values(ev)) == TargetsConfig()
    ev = build_parser().parse_args(["evaluate", "--tasks", "t", "--out", "o", "--conditions", "zero_shot,few_shot"])
    assert cli_evaluate.eval_options().config(ev).conditions == ("zero_shot", "few_shot")
    # every option help comes from the field's metadata
    helps = {a.dest: a.help for a in PARSERS[("evaluate",)]._actions}
    for f in dataclasses.fields(EvalConfig):
        assert helps[f.name].startswith(f.metadata["help"]), f.name


def test_a_missing_teacher_prompt_file_is_a_one_line_error(tmp_path, capsys):
    assert main(["tune", "--task", "gen/plural", "--out", str(tmp_path / "o"), "--objective", "distill",
                 "--teacher-prompt", f"@{tmp_path / 'missing.txt'}"]) == 2
    assert capsys.readouterr().err.strip() == f"error: cannot read teacher prompt file {tmp_path / 'missing.txt'}: " \
                                              "FileNotFoundError"
