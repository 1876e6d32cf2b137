"""The interpreter registry: one set of names for describe, evaluate and the comparison, each interpreter
loading what it needs itself."""

import json

import pytest

from soft2hard.cli import main
from soft2hard.dod.manifest import Manifest
from soft2hard.errors import Soft2HardError
from soft2hard.evaluation.conditions import NEEDS_SOFT_PROMPT, TEXT_CONDITIONS
from soft2hard.interpret.registry import LABEL_FREE, NAMES, InterpreterSettings, check_names, get_interpreter
from soft2hard.interpret.translator import load_translator
from soft2hard.models import load_model


def test_one_list_of_names_everywhere():
    assert NAMES == ("projection", "inspect", "inspect_oracle", "translator")
    assert LABEL_FREE == ("projection", "inspect", "translator")  # the oracle peeks at the reference
    # evaluate's interpretation conditions are exactly the registry's label-free interpreters
    assert [c for c in TEXT_CONDITIONS if c in NAMES] == list(LABEL_FREE)
    assert set(LABEL_FREE) <= set(NEEDS_SOFT_PROMPT)
    from soft2hard.cli import build_parser

    describe = build_parser()._subparsers._group_actions[0].choices["describe"]
    method = next(a for a in describe._actions if a.dest == "method")
    assert tuple(method.choices) == NAMES


def test_unknown_names_get_one_line_errors(tiny_llama_dir):
    with pytest.raises(Soft2HardError, match="unknown oracle; choose from projection"):
        check_names(["projection", "oracle"])
    with pytest.raises(Soft2HardError, match="none given"):
        check_names([])
    lm = load_model(str(tiny_llama_dir), device="cpu")
    with pytest.raises(Soft2HardError, match="unknown interpreter 'nope'"):
        get_interpreter("nope", lm)
    import torch

    with pytest.raises(Soft2HardError, match="needs|reference"):
        get_interpreter("inspect_oracle", lm).describe(torch.zeros(2, lm.d_model))


def test_translator_loads_its_own_model_copy(tiny_translator, tiny_dod, tiny_llama_dir):
    """Building costs nothing; describing loads the translator on a copy, so the caller's model stays plain."""
    m = Manifest.load(tiny_dod)
    prompt = m.load_prompt(m.tasks[0].prompts[0])
    lm = load_model(str(tiny_llama_dir), device="cpu")
    interp = get_interpreter("translator", lm, InterpreterSettings(translator=tiny_translator, max_new_tokens=16,
                                                                   load={"device": "cpu"}))
    assert interp._translator is None  # nothing loaded yet
    [d] = interp.describe(prompt, cue="instruction")
    assert d.method == "translator" and d.details["cue"] == "instruction"
    assert interp.translator.lm is not lm and not hasattr(lm.model, "peft_config")
    direct = load_translator(load_model(str(tiny_llama_dir), device="cpu"), tiny_translator)
    assert d.text == direct.translate([prompt], cue="instruction", max_new_tokens=16)[0].text
    assert interp.saw(m.tasks[0].name) == direct.saw(m.tasks[0].name)


def test_describe_method_translator_matches_translate(tiny_translator, tiny_dod, tiny_llama_dir, capsys):
    m = Manifest.load(tiny_dod)
    prompt_dir = m.resolve(m.tasks[0].prompts[0])
    common = [str(prompt_dir), "--model", str(tiny_llama_dir), "--translator", str(tiny_translator),
              "--device", "cpu", "--json"]
    assert main(["describe", "--method", "translator", "--cue", "labels", *common]) == 0
    described = json.loads(capsys.readouterr().out)
    assert main(["translate", "--cue", "labels", "--max-new-tokens", "64", "--candidates", "1", *common]) == 0
    translated = json.loads(capsys.readouterr().out)
    assert described["method"] == "translator"
    assert described["descriptions"][0]["text"] == translated["text"]
    assert described["descriptions"][0]["details"]["cue"] == "labels"
    assert main(["describe", "--method", "projection", "--oracle", *common]) == 2
    assert "does not apply" in capsys.readouterr().err
