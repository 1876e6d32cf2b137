"""Instruction induction (the ``induced`` condition): the documented prompt, how a completion is cleaned, and
that ``evaluate`` asks the inducer it is told to (the source model or a target)."""

from __future__ import annotations

import json

import pytest

from soft2hard.errors import Soft2HardError
from soft2hard.evaluation import EvalConfig, LazyTarget, SourceSide, evaluate
from soft2hard.evaluation.conditions import few_shot_demos
from soft2hard.evaluation.items import from_dod
from soft2hard.interpret.induction import MAX_TOKENS, clean_instruction, induce, induction_prompt
from soft2hard.models import load_model
from soft2hard.targets import LocalTarget
from soft2hard.tasks.base import Example


def test_the_prompt_is_the_documented_recipe():
    demos = [Example("cat", "cats"), Example("box", "boxes")]
    assert induction_prompt(demos) == (
        "I gave a friend an instruction and 2 inputs. The friend read the instruction and wrote an output for "
        "every one of the inputs. Here are the input-output pairs:\n\n"
        "Input: cat\nOutput: cats\n\nInput: box\nOutput: boxes\n\nThe instruction was")
    with pytest.raises(ValueError):
        induction_prompt([])


@pytest.mark.parametrize("completion, expected", [
    (" to write the plural of the word.\n\nInput: dog", "Write the plural of the word."),
    (':\n"Give the plural form."', "Give the plural form."),
    ("\n\n  sort the letters\nmore", "Sort the letters"),
    ("", ""),
])
def test_a_completion_becomes_one_instruction_line(completion, expected):
    assert clean_instruction(completion) == expected


def test_induce_sends_one_prompt_and_keeps_the_raw_answer():
    sent = []

    def complete(prompts, max_tokens, stop):
        sent.append((prompts, max_tokens, stop))
        return [" to add an s."]

    demos = [Example("cat", "cats")]
    out = induce(complete, demos)
    assert out == {"text": "Add an s.", "raw": " to add an s.", "n_demos": 1}
    assert sent == [([induction_prompt(demos)], MAX_TOKENS, ())]


def _evaluate(out, tiny_dod, tiny_llama_dir, tiny_gemma_dir, inducer):
    model, items = from_dod(tiny_dod, ["all"], cache_dir=out.parent)
    items = items[:1]
    source = SourceSide(str(tiny_llama_dir), out.parent, device="cpu", progress=False)
    calls = []

    def make():
        calls.append(1)
        return LocalTarget(load_model(str(tiny_gemma_dir), device="cpu"))

    target = LazyTarget(f"local:{tiny_gemma_dir.name}", make)
    cfg = EvalConfig(conditions=("induced",), max_examples=2, faithfulness_examples=2, induction_examples=3,
                     inducer=inducer)
    evaluate(items, source, model, [target], cfg, out, progress=False)
    return items[0], json.loads((out / "texts.json").read_text())[items[0].name]["texts"]["induced"]


def test_evaluate_induces_with_the_source_model_or_a_named_target(tmp_path, tiny_dod, tiny_llama_dir,
                                                                   tiny_gemma_dir, tiny_llama):
    item, by_source = _evaluate(tmp_path / "source", tiny_dod, tiny_llama_dir, tiny_gemma_dir, "source")
    demos = few_shot_demos(item.train(), 3, seed=0)  # training examples only, seeded
    assert by_source["n_demos"] == 3 and by_source["inducer"] == tiny_llama.name
    expected = induce(lambda p, n, s: tiny_llama.generate(None, p, n, s), demos)
    assert by_source["raw"] == expected["raw"] and by_source["text"] == expected["text"]
    assert not {ex.input for ex in demos} & {ex.input for ex in item.test(50)}
    name = f"local:{tiny_gemma_dir.name}"
    _, by_target = _evaluate(tmp_path / "target", tiny_dod, tiny_llama_dir, tiny_gemma_dir, name)
    assert by_target["inducer"] == name and by_target["n_demos"] == 3
    with pytest.raises(Soft2HardError, match="inducer 'gpt-9' is not one of"):
        _evaluate(tmp_path / "bad", tiny_dod, tiny_llama_dir, tiny_gemma_dir, "gpt-9")
