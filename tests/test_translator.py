"""The learned translator on a tiny DoD: training, exact resume, translation, CLI contract, errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from soft2hard.dod.manifest import Manifest
from soft2hard.errors import Soft2HardError
from soft2hard.interpret.comparison import compare_interpreters, summarize
from soft2hard.interpret.selection import Profile
from soft2hard.interpret.translator import (
    TranslationExample,
    TranslatorConfig,
    _load_adapter_weights,
    apply_lora,
    batch_loss,
    load_translator,
)
from soft2hard.interpret.translator_training import batch_indices, train_translator, training_examples
from soft2hard.models import load_model
from soft2hard.prompts import SoftPrompt
from soft2hard.tasks import get_task
from tests.conftest import TINY_TRANSLATOR as CFG


def fresh(model_dir):
    return load_model(str(model_dir), device="cpu")


@pytest.fixture(scope="module")
def trained(tiny_translator):
    return tiny_translator


def test_training_examples_take_every_checkpoint_of_training_tasks(tiny_dod):
    m = Manifest.load(tiny_dod)
    examples = training_examples(m, TranslatorConfig(**CFG))
    train_tasks = m.split("train")
    assert len(examples) == sum(len(t.prompts) for t in train_tasks)
    assert {ex.task for ex in examples} == {t.name for t in train_tasks}
    cues = {ex.task: ex.cue for ex in examples}
    assert all(cues[t.name] == ("labels" if t.kind == "classification" else "instruction") for t in train_tasks)
    best = training_examples(m, TranslatorConfig(**{**CFG, "prompts": "best"}))
    assert len(best) == len(train_tasks)


def test_batches_cover_each_epoch_once():
    cfg = TranslatorConfig(**{**CFG, "batch_size": 3})
    epoch = sorted(i for step in range(4) for i in batch_indices(10, step, cfg))
    assert epoch == list(range(10))
    assert batch_indices(10, 4, cfg) != batch_indices(10, 0, cfg) or batch_indices(10, 5, cfg) != batch_indices(10, 1, cfg)


def _memorise(lm, epochs: int, lr: float):
    """Train on two random prompts; returns (loss before, loss after, translation of the first)."""
    import tempfile

    gen = torch.Generator().manual_seed(0)
    scale = float(lm.vocab_embeddings().float().std())
    examples = [TranslationExample(torch.randn(4, lm.d_model, generator=gen) * scale, "instruction",
                                   "Give the plural form.", "a"),
                TranslationExample(torch.randn(4, lm.d_model, generator=gen) * scale, "labels", "fruit, animal", "b")]
    cfg = TranslatorConfig(epochs=epochs, batch_size=2, lr=lr, lora_r=4, lora_alpha=8, warmup_steps=1,
                           lora_dropout=0.0, save_every=1000)
    with torch.no_grad():
        peft_model = apply_lora(lm, cfg)
        before = float(batch_loss(lm, examples, cfg))
        peft_model.unload()  # back to the plain model: train_translator applies its own adapters
    with tempfile.TemporaryDirectory() as tmp:
        tr = train_translator(lm, examples, cfg, tmp, progress=False)
        with torch.no_grad():
            after = float(batch_loss(tr.lm, examples, cfg))
        text = tr.translate([examples[0].prompt], cue="instruction")[0].text
    return before, after, text


def test_translator_loss_falls_on_a_tiny_model(tiny_llama_dir):
    before, after, _ = _memorise(fresh(tiny_llama_dir), epochs=20, lr=1e-2)
    assert after < before - 0.5  # a random 2-layer model's LM head keeps logits near uniform: a small drop


@pytest.mark.slow
def test_translator_memorises_references_on_smollm2(cache_dir):
    lm = load_model("smollm2-135m", device="cpu", cache_dir=cache_dir)
    before, after, text = _memorise(lm, epochs=30, lr=2e-3)
    assert after < 0.2 < before
    assert text == "Give the plural form."


def test_trained_translator_files_and_translation(trained, tiny_dod, tiny_llama_dir):
    meta = json.loads((trained / "translator.json").read_text())
    assert meta["d_model"] == 64 and meta["n_tokens_seen"] == [4]
    weights = load_file(str(trained / "adapter_model.safetensors"))
    assert weights and all(t.dtype == torch.float16 for t in weights.values())
    assert json.loads((trained / "adapter_config.json").read_text())["peft_type"] == "LORA"
    tr = load_translator(fresh(tiny_llama_dir), trained)
    prompts = [x for _, _, x in Manifest.load(tiny_dod).iter_prompts()][:3]
    descs = tr.translate(prompts)
    assert len(descs) == 3 and all(isinstance(d.text, str) and d.method == "translator" for d in descs)
    again = load_translator(fresh(tiny_llama_dir), trained).translate(prompts)
    assert [d.text for d in descs] == [d.text for d in again]
    with pytest.raises(Soft2HardError, match="width 32"):
        tr.translate([torch.zeros(4, 32)])


def test_loaded_translator_is_merged_and_computes_what_the_adapter_does(trained, tiny_dod, tiny_llama_dir):
    """load_translator folds the LoRA weights into the model (no LoRA layer remains, so decoding pays no adapter
    cost); the merged model's logits equal the unmerged adapter's within float rounding."""
    from peft.tuners.lora import LoraLayer

    cfg = TranslatorConfig(**json.loads((trained / "translator.json").read_text())["config"])
    prompts = [x for _, _, x in Manifest.load(tiny_dod).iter_prompts()][:2]
    examples = [TranslationExample(p, "instruction", "Give the plural form.", "t") for p in prompts]
    unmerged = fresh(tiny_llama_dir)
    peft_model = apply_lora(unmerged, cfg)
    _load_adapter_weights(peft_model, trained)
    peft_model.eval()
    merged = load_translator(fresh(tiny_llama_dir), trained).lm
    assert not any(isinstance(m, LoraLayer) for m in merged.model.modules())
    assert any(isinstance(m, LoraLayer) for m in unmerged.model.modules())
    with torch.no_grad():
        a, b = float(batch_loss(unmerged, examples, cfg)), float(batch_loss(merged, examples, cfg))
    assert a == pytest.approx(b, abs=1e-4)
    assert a != pytest.approx(float(batch_loss(fresh(tiny_llama_dir), examples, cfg)), abs=1e-3)  # the adapter acts


def test_interrupted_training_resumes_exactly(tmp_path, trained, tiny_dod, tiny_llama_dir):
    examples = training_examples(Manifest.load(tiny_dod), TranslatorConfig(**CFG))
    out = tmp_path / "t"
    assert train_translator(fresh(tiny_llama_dir), examples, TranslatorConfig(**CFG), out, progress=False,
                            stop_after=2) is None
    assert not (out / "translator.json").exists()
    with pytest.raises(Soft2HardError, match="--resume"):
        train_translator(fresh(tiny_llama_dir), examples, TranslatorConfig(**CFG), out, progress=False)
    train_translator(fresh(tiny_llama_dir), examples, TranslatorConfig(**CFG), out, resume=True, progress=False)
    a = load_file(str(out / "adapter_model.safetensors"))
    b = load_file(str(trained / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "soft2hard.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def test_translate_cli_json_and_errors(tmp_path, trained, tiny_dod, tiny_llama_dir):
    m = Manifest.load(tiny_dod)
    entry = m.tasks[0].prompts[0]
    prompt_dir = m.resolve(entry)
    proc = _cli("translate", prompt_dir, "--model", tiny_llama_dir, "--translator", trained, "--json",
                "--candidates", 1)  # the greedy translation, unverified
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    kind = get_task(SoftPrompt.load(prompt_dir).metadata["task"]).answer_type
    assert isinstance(out["text"], str) and out["cue"] == ("labels" if kind == "classification" else "instruction")
    assert list(out["texts"]) == [out["cue"]]
    # by default the translation is verified on the inputs of the task the prompt names (8 candidates); this model
    # has no InSPEcT profile, so its text is left out of the candidates, with a notice
    proc = _cli("translate", prompt_dir, "--model", tiny_llama_dir, "--translator", trained, "--json",
                "--max-new-tokens", 8, "--n-inputs", 3)
    assert proc.returncode == 0, proc.stderr
    verified = json.loads(proc.stdout)
    assert verified["task"] == SoftPrompt.load(prompt_dir).metadata["task"] and verified["n_inputs"] == 3
    assert isinstance(verified["verified"], bool) and verified["empty"]["origin"] == "empty"
    assert "inspect" not in {r["origin"] for r in verified["ranked"]} and "no calibrated InSPEcT profile" in proc.stderr
    # a prompt whose kind is unknown (a bare tensor file) gets both texts, unverified (it names no task)
    bare = tmp_path / "bare.safetensors"
    save_file({"prompt": SoftPrompt.load(prompt_dir).tensor}, str(bare))
    proc = _cli("translate", bare, "--model", tiny_llama_dir, "--translator", trained)
    assert proc.returncode == 0, proc.stderr
    assert [line.split(":")[0] for line in proc.stdout.splitlines()] == ["instruction", "labels"]
    assert "not verified" in proc.stderr and "--inputs" in proc.stderr
    other = SoftPrompt(torch.zeros(4, 64), model="gemma3-270m")
    other.save(tmp_path / "other")
    proc = _cli("translate", tmp_path / "other", "--model", tiny_llama_dir, "--translator", trained)
    assert proc.returncode == 2 and "gemma3-270m" in proc.stderr and proc.stderr.count("\n") == 1
    proc = _cli("translate", prompt_dir, "--model", tiny_llama_dir, "--translator", tmp_path)
    assert proc.returncode == 2 and "not a soft2hard translator" in proc.stderr


def test_eval_rows_and_summary(tmp_path, trained, tiny_dod, tiny_llama_dir):
    m = Manifest.load(tiny_dod)
    profile = Profile(model=str(tiny_llama_dir), pairs=[(1, 1)], metric="rouge_l", n_prompts=0,
                      inspect={"max_new_tokens": 8})
    profile.save(tmp_path / "profiles" / "p.json")
    rows, summary = compare_interpreters(m, trained, tmp_path, device="cpu", oracle_layers="0-1", progress=False,
                                        profile_path=tmp_path / "profiles" / "p.json")
    held = m.split("heldout")
    assert {r["task"] for r in rows} == {t.name for t in held}
    assert {r["method"] for r in rows} == {"projection", "inspect", "inspect_oracle", "translator"}
    for r in rows:
        assert 0.0 <= r["rouge_l"] <= 1.0 and -1.0 <= r["cosine"] <= 1.0
    kind = held[0].kind
    assert summary[kind]["translator"]["n"] == len(held)
    assert summarize(rows) == summary


def test_translate_reads_an_adapter_saved_by_peft(tmp_path, trained, tiny_llama_dir):
    from peft import PromptTuningConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    peft_model = get_peft_model(base, PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4))
    peft_model.save_pretrained(tmp_path / "adapter")
    proc = _cli("translate", tmp_path / "adapter", "--model", tiny_llama_dir, "--translator", trained, "--json")
    assert proc.returncode == 0, proc.stderr
    assert isinstance(json.loads(proc.stdout)["text"], str)


def test_hub_ids_of_builtin_models_are_the_same_model():
    from soft2hard.models import canonical_model_name

    assert canonical_model_name("HuggingFaceTB/SmolLM2-135M-Instruct") == "smollm2-135m"
    assert canonical_model_name("gemma3-270m") == "gemma3-270m"
    assert canonical_model_name("some/other-model") == "some/other-model"


@pytest.mark.slow
def test_shipped_translator_names_unseen_labels(cache_dir, tmp_path):
    """The translator in the package, on a clean held-out classification prompt of the committed bank (its labels
    never appear in translator training, not even in a general reference: issue 19): `soft2hard translate --json`
    names them."""
    from pathlib import Path

    from soft2hard.metrics import class_rate

    bank = Manifest.load(Path(__file__).resolve().parents[1] / "dod" / "smollm2-135m")
    train_labels = {x for t in bank.split("train") if t.labels for x in t.labels}
    task = bank.clean_heldout("classification")[0]
    assert not set(task.labels) & train_labels and task.name not in bank.heldout_leaks()
    entry = next(e for e in task.prompts if e.best)
    SoftPrompt(bank.load_prompt(entry), model="smollm2-135m").save(tmp_path / "p")
    proc = _cli("translate", tmp_path / "p", "--cue", "labels", "--json")
    assert proc.returncode == 0, proc.stderr
    text = json.loads(proc.stdout)["text"]
    assert class_rate(text, task.labels) >= 0.5, (text, task.labels)


def test_eval_cli_runs_only_the_chosen_methods(tmp_path, trained, tiny_dod, tiny_llama_dir):
    profile = Profile(model=str(tiny_llama_dir), pairs=[(1, 1)], metric="rouge_l", n_prompts=0,
                      inspect={"max_new_tokens": 8})
    profile.save(tmp_path / "p.json")
    proc = _cli("translator", "eval", "--dod", tiny_dod, "--translator", trained, "--out", tmp_path / "e",
                "--profile", tmp_path / "p.json", "--methods", "projection,translator", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads((tmp_path / "e" / "rows.json").read_text())
    assert rows and {r["method"] for r in rows} == {"projection", "translator"}
    proc = _cli("translator", "eval", "--dod", tiny_dod, "--out", tmp_path / "f", "--methods", "projection,oracle")
    assert proc.returncode == 2 and "unknown oracle" in proc.stderr and proc.stderr.count("\n") == 1


def test_default_cues_follow_the_prompts_kind():
    from soft2hard.cli.translator import default_cues

    assert default_cues({"answer_type": "classification"}) == ["labels"]
    assert default_cues({"answer_type": "generation"}) == ["instruction"]
    assert default_cues({}) == ["instruction", "labels"]
    assert default_cues({"task": "cat/fruit-animal"}) == ["labels"]  # older prompts: the task says
    assert default_cues({"task": "gen/plural"}) == ["instruction"]
    assert default_cues({"task": "no/such-task"}) == ["instruction", "labels"]
