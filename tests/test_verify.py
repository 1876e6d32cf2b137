"""Verified translation: candidates scored by faithfulness to the soft prompt on unlabelled inputs."""

import logging

import pytest
import torch

from soft2hard.interpret import verify as verification
from soft2hard.interpret.translator import load_translator
from soft2hard.interpret.verify import faithfulness_many, verify, with_instruction
from soft2hard.models import load_model
from soft2hard.tasks.base import Example, Task

WORDS = ["apple", "cat", "pear", "dog", "plum", "cow", "fig", "owl", "kiwi", "bee", "lime", "rat"]
TEXT = "Say whether it is a fruit or an animal."


def _cls() -> Task:
    return Task("t/fruit", "test", TEXT, tuple(Example(w, "fruit" if i % 2 == 0 else "animal")
                                               for i, w in enumerate(WORDS)), labels=("fruit", "animal"))


def _gen() -> Task:
    return Task("t/first", "test", "Write the first letter.", tuple(Example(w, w[0]) for w in WORDS))


def _prompt_of(lm, text: str) -> torch.Tensor:
    """A soft prompt that is exactly ``text`` and its newline: the sequence the model sees is the text's own
    (SmolLM2's tokenizer adds no BOS, so the text, its newline and the context tokenize apart)."""
    assert lm.encode("x") == lm.encode("x", special=False)
    return lm.embed(torch.tensor(lm.encode(text + "\n", special=False))).detach()


@pytest.mark.parametrize("make_task", [_cls, _gen])
def test_the_text_a_prompt_was_made_of_ranks_first(tiny_llama, make_task):
    task = make_task()
    prompt = _prompt_of(tiny_llama, TEXT)
    candidates = [("Name a colour.", "a"), (TEXT, "b"), ("  " + TEXT + " ", "dup"), ("Count the letters.", "c")]
    verdict = verify(tiny_llama, prompt, candidates, task, task.examples[:6])
    assert verdict.best.origin == "b" and verdict.best.agreement == 1.0 and verdict.best.mean_kl < 1e-3
    assert [c.origin for c in verdict.ranked].count("b") == 1 and "dup" not in [c.origin for c in verdict.ranked]
    assert verdict.verified and verdict.empty.origin == "empty" and verdict.empty.text == ""
    assert verdict.to_dict()["ranked"][0]["origin"] == "b" and verdict.n_inputs == 6


def test_selection_never_reads_the_targets(tiny_llama):
    task = _gen()
    prompt = _prompt_of(tiny_llama, TEXT)
    real = faithfulness_many(tiny_llama, prompt, ["", "Name a colour."], task, task.examples[:4])
    garbled = [Example(ex.input, "zzz qqq") for ex in task.examples[:4]]
    assert faithfulness_many(tiny_llama, prompt, ["", "Name a colour."], task, garbled) == real


@pytest.mark.slow
def test_generation_agreement_is_greedy_output_agreement(smollm2):
    """Agreement read off one teacher-forced pass = the texts' greedy answers decoded and compared with the soft
    prompt's (on a real model, where answers are words and lines end)."""
    from soft2hard.distill import teacher_context
    from soft2hard.scoring import GENERATION_STOP, normalize_answer

    task = Task("t/plural", "test", "Write the plural.", tuple(Example(w, w + "s") for w in WORDS))
    prompt = _prompt_of(smollm2, "Write the plural of the word.")
    texts = ["", "Write the plural of the word.", "Write the word in capital letters.", "Translate into French."]
    got = faithfulness_many(smollm2, prompt, texts, task, task.examples[:8])
    contexts = [task.format_input(ex.input) for ex in task.examples[:8]]
    soft = smollm2.generate(prompt, contexts, 24, GENERATION_STOP)
    for text, g in zip(texts, got):
        outs = smollm2.generate(None, [teacher_context(text, c) if text else c for c in contexts], 24,
                                GENERATION_STOP)
        same = sum(normalize_answer(a) == normalize_answer(b) for a, b in zip(outs, soft)) / len(contexts)
        assert g["agreement"] == same, (text, outs, soft)
    assert got[1]["agreement"] == 1.0 and len({g["agreement"] for g in got}) > 1


def test_unverified_when_no_text_beats_the_empty_one(tiny_llama, monkeypatch, caplog):
    task = _cls()
    fake = {"": (0.75, 0.10), "worse": (0.5, 0.05), "tied but further": (0.75, 0.2)}
    monkeypatch.setattr(verification, "faithfulness_many", lambda lm, p, texts, *a, **k: [
        {"agreement": fake[t][0], "mean_kl": fake[t][1]} for t in texts])
    with caplog.at_level(logging.WARNING):
        verdict = verify(tiny_llama, torch.zeros(2, tiny_llama.d_model), [("worse", "a"), ("tied but further", "b")],
                         task, task.examples[:2])
    assert not verdict.verified and verdict.best.origin == "b"  # ranked by agreement first, then KL
    assert "verified: false" in caplog.text and verdict.verified_by is None
    fake["better"] = (0.75, 0.01)
    closer = verify(tiny_llama, torch.zeros(2, tiny_llama.d_model), [("better", "c")], task, task.examples[:2])
    assert closer.verified and closer.verified_by == "kl"  # same agreement as no text: a lower KL only
    fake["agrees more"] = (1.0, 0.5)
    agrees = verify(tiny_llama, torch.zeros(2, tiny_llama.d_model), [("better", "c"), ("agrees more", "d")], task,
                    task.examples[:2])
    assert agrees.best.origin == "d" and agrees.to_dict()["verified_by"] == "agreement"


def test_labelled_accuracy_uses_the_instruction_line(tiny_llama):
    task = _cls()
    framed = with_instruction(task, "Use {braces} literally.")
    assert framed.format_input("cat") == "Use {braces} literally.\n" + task.format_input("cat")
    verdict = verify(tiny_llama, _prompt_of(tiny_llama, TEXT), [(TEXT, "b")], task, task.examples[:4],
                     labelled=task.examples[4:8])
    assert all(0.0 <= c.accuracy <= 1.0 for c in [verdict.empty, *verdict.ranked])


def test_translator_candidates_are_seeded(tiny_translator, tiny_llama_dir):
    tr = load_translator(load_model(str(tiny_llama_dir), device="cpu"), tiny_translator)
    prompt = torch.randn(4, tr.lm.d_model) * 0.02
    a = tr.candidates(prompt, n=6, seed=3, max_new_tokens=8)
    assert [o for _, o in a] == ["translator:greedy:instruction", "translator:greedy:labels", "translator:beam:0",
                                 "translator:beam:1", "translator:sample:0", "translator:sample:1"]
    assert tr.candidates(prompt, n=6, seed=3, max_new_tokens=8) == a
    assert a[0][0] == tr.translate([prompt], "instruction", 8)[0].text  # the greedy candidate is `translate`'s
    assert len(tr.candidates(prompt, n=1, max_new_tokens=8)) == 1


def test_translate_cli_with_candidates(tiny_translator, tiny_dod, tiny_llama_dir, tiny_profile, tmp_path, capsys):
    import json

    from soft2hard.cli import main
    from soft2hard.dod.manifest import Manifest
    from soft2hard.prompts import SoftPrompt

    m = Manifest.load(tiny_dod)
    prompt_dir = m.resolve(m.tasks[0].prompts[0])
    common = ["--model", str(tiny_llama_dir), "--translator", str(tiny_translator), "--device", "cpu",
              "--max-new-tokens", "8"]
    assert main(["translate", str(prompt_dir), *common, "--candidates", "3", "--n-inputs", "3", "--json",
                 "--no-inspect"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["task"] == m.tasks[0].name and out["n_inputs"] == 3 and isinstance(out["verified"], bool)
    assert 1 <= len(out["ranked"]) <= 3 and out["empty"]["origin"] == "empty"
    assert out["text"] == (out["ranked"][0]["text"] if out["ranked"] else "")
    assert {r["origin"].split(":")[1] for r in out["ranked"]} <= {"greedy", "beam"}
    # the label-free InSPEcT text is a candidate too (by default), scored like the translator's
    assert main(["translate", str(prompt_dir), *common, "--candidates", "3", "--n-inputs", "3", "--json",
                 "--profile", str(tiny_profile)]) == 0
    with_inspect = json.loads(capsys.readouterr().out)
    origins = [r["origin"] for r in with_inspect["ranked"]]
    inspect_text = main(["describe", str(prompt_dir), "--model", str(tiny_llama_dir), "--device", "cpu",
                         "--profile", str(tiny_profile), "--json"])
    described = json.loads(capsys.readouterr().out)
    assert inspect_text == 0
    first = described["descriptions"][0]["text"].strip()
    assert first  # deduplicated: the InSPEcT origin is listed unless a translator candidate has the same text
    assert "inspect" in origins or first in {r["text"] for r in with_inspect["ranked"][:3]}
    assert first in {r["text"] for r in with_inspect["ranked"]}
    SoftPrompt(m.load_prompt(m.tasks[0].prompts[0]), model=str(tiny_llama_dir)).save(tmp_path / "bare")
    assert main(["translate", str(tmp_path / "bare"), *common, "--candidates", "3"]) == 2
    err = capsys.readouterr().err
    assert "--inputs" in err and err.count("\n") == 1


def test_no_inputs_is_a_one_line_error(tiny_llama):
    from soft2hard.errors import Soft2HardError

    with pytest.raises(Soft2HardError, match="no inputs to verify"):
        verify(tiny_llama, torch.zeros(2, tiny_llama.d_model), [("Say hi.", "a")], _cls(), [])
