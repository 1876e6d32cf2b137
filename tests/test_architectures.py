"""Any architecture (claim 7): the whole pipeline on tiny random GPT-2 and Qwen2 models.

GPT-2 differs from the Llama family in every way lm.py cares about: its decoder is ``transformer`` (not
``model``) with blocks ``transformer.h``, positions are learned absolute embeddings added inside the decoder,
its projections are transformers' ``Conv1D`` (``c_attn``, ``c_proj``, ``c_fc``), and its tokenizer has no pad
token. Qwen2 is Llama-like with biased q/k/v projections. Both use the real SmolLM2 tokenizer (as conftest's
tiny models do); the GPT-2 copy has its pad token removed.

On each: tune a soft prompt, describe it (projection; InSPEcT, checked against the plain reference loop),
calibrate an InSPEcT profile, build a tiny DoD, train the translator (LoRA on the model's own layers), and
evaluate the prompt and its texts.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from soft2hard.dod.manifest import Manifest
from soft2hard.evaluation import EvalConfig, LazyTarget, SourceSide, evaluate
from soft2hard.evaluation.items import from_dod
from soft2hard.interpret.inspection import InspectConfig, inspect_grid
from soft2hard.interpret.projection import project
from soft2hard.interpret.selection import Profile, calibrate, reference_text
from soft2hard.interpret.translator import TranslatorConfig, load_translator
from soft2hard.interpret.translator_training import train_translator, training_examples
from soft2hard.models import load_model
from soft2hard.targets import LocalTarget
from soft2hard.tasks import get_task
from soft2hard.tuning import TuningConfig, tune
from tests.conftest import TINY_TRANSLATOR, tiny_config

from .inspect_reference import reference_inspect

ARCHS = ("gpt2", "qwen2")
LORA_TARGETS = {"gpt2": ["c_attn", "c_proj", "c_fc"],
                "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]}


def _tiny_config(arch: str, tok):
    from transformers import GPT2Config, Qwen2Config

    if arch == "gpt2":
        return GPT2Config(vocab_size=len(tok), n_embd=64, n_layer=2, n_head=4, n_positions=512,
                          bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    return Qwen2Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                       tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                       pad_token_id=tok.pad_token_id)


@pytest.fixture(scope="module", params=ARCHS)
def arch_dir(request, tmp_path_factory, smol_tokenizer) -> tuple[str, Path]:
    """(architecture, a saved tiny random model of it), like conftest's ``_save_tiny``."""
    from transformers import AutoModelForCausalLM

    arch = request.param
    tok = copy.deepcopy(smol_tokenizer)
    if arch == "gpt2":
        tok.pad_token = None  # as GPT-2's own tokenizer: no pad token
    path = tmp_path_factory.mktemp(f"tiny-{arch}")
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(_tiny_config(arch, tok)).save_pretrained(path)
    tok.save_pretrained(path)
    return arch, path


def test_lm_wrapper_facts(arch_dir):
    arch, path = arch_dir
    lm = load_model(str(path), device="cpu")
    assert lm.lora_target_modules() == LORA_TARGETS[arch]
    assert lm.model.base_model_prefix == ("transformer" if arch == "gpt2" else "model")
    if arch == "gpt2":
        assert lm.tokenizer.pad_token_id is None and lm.pad_id == lm.tokenizer.eos_token_id
    torch.manual_seed(0)
    prompt = torch.randn(3, lm.d_model) * 0.1
    # target log-probs (prefix KV cache, explicit positions) equal one plain forward over [prompt][context][target]
    contexts, targets = ["hello there", "a"], [" cats", " dogs and"]
    got, _ = lm.target_logprobs(prompt, contexts, targets)
    for b, (c, t) in enumerate(zip(contexts, targets)):
        ctx, tgt = lm.encode(c), lm.encode(t, special=False)
        embeds = torch.cat([prompt, lm.embed(torch.tensor(ctx + tgt))])[None]
        with torch.no_grad():
            logp = lm.model(inputs_embeds=embeds).logits[0].log_softmax(-1)
        first = prompt.shape[0] + len(ctx)
        expected = sum(float(logp[first + j - 1, tok]) for j, tok in enumerate(tgt))
        assert float(got[b]) == pytest.approx(expected, abs=1e-4)
    # left-padded batched greedy decoding equals one row at a time (positions skip the padding)
    batched = lm.generate(prompt, ["hello there my friend", "a"], max_new_tokens=4)
    assert batched == [lm.generate(prompt, [c], max_new_tokens=4)[0] for c in ["hello there my friend", "a"]]


def test_pipeline(arch_dir, tmp_path, cache_dir):
    arch, path = arch_dir
    lm = load_model(str(path), device="cpu")
    task = get_task("gen/plural")

    # tune
    cfg = TuningConfig(n_tokens=4, steps=3, eval_every=3, lr=3e-2, batch_size=4, max_eval_examples=4,
                       max_test_examples=4, init="vocab")
    run = tmp_path / "prompt"
    result = tune(lm, task, cfg, run, progress=False)
    prompt = result.prompt.tensor
    assert prompt.shape == (4, lm.d_model) and "test_score" in result.metrics

    # describe: projection and InSPEcT (the batched grid equals the plain hook-based reference loop)
    assert len(project(lm, prompt).details["token_ids"]) == 4
    icfg = InspectConfig(source_layers=[0, 1], target_layers=[0, 1], max_new_tokens=6, batch_size=4)
    for d in inspect_grid(lm, prompt, icfg):
        assert d.text == reference_inspect(lm, prompt, icfg, d.layers), d.layers
    profile = calibrate(lm, [(str(run), prompt, reference_text(task), task.labels)], icfg, progress=False)
    assert profile.calibration_tasks == ["gen/plural"] and profile.saw("gen/plural")
    profile.save(tmp_path / "profile.json")

    # translator train on a tiny DoD, LoRA on the model's own projections
    dod = tmp_path / "dod"
    from soft2hard.dod.build import build

    build(dod, tiny_config(path), cache_dir, workers=0, progress=False)
    manifest = Manifest.load(dod)
    tcfg = TranslatorConfig(**TINY_TRANSLATOR)
    translator_dir = tmp_path / "translator"
    tr = train_translator(load_model(str(path), device="cpu"), training_examples(manifest, tcfg), tcfg,
                          translator_dir, progress=False)
    assert list(tr.meta["config"]["target_modules"]) == LORA_TARGETS[arch]
    train_names = sorted(t.name for t in manifest.split("train"))
    assert tr.meta["training_tasks"] == train_names
    loaded = load_translator(load_model(str(path), device="cpu"), translator_dir)
    assert isinstance(loaded.translate([prompt])[0].text, str) and loaded.saw(train_names[0])

    # evaluate every DoD task: the soft prompt on its model, the texts on a target (the same tiny model)
    model, items = from_dod(dod, ["all"], cache_dir=cache_dir)
    source = SourceSide(str(path), cache_dir, device="cpu", translator_dir=translator_dir,
                        profile=tmp_path / "profile.json", progress=False, lm=lm)
    target = LazyTarget(f"local:{arch}", lambda: LocalTarget(lm, mode="completion"))
    ecfg = EvalConfig(conditions=("soft_prompt", "zero_shot", "projection", "inspect", "translator"),
                      max_examples=2, faithfulness_examples=2)
    rows = evaluate(items, source, model, [target], ecfg, tmp_path / "eval", progress=False)
    assert {(r["task"], r["condition"]) for r in rows} == {(i.name, c) for i in items for c in ecfg.conditions}
    assert all(r["score"] is None or 0.0 <= r["score"] <= 1.0 for r in rows)
    seen = {(r["task"], r["condition"]) for r in rows if r.get("seen_in_training")}
    expected = {(t, "translator") for t in train_names} | ({("gen/plural", "inspect")} & {
        (i.name, "inspect") for i in items})
    assert seen == expected
    assert Profile.load(tmp_path / "profile.json").calibration_tasks == ["gen/plural"]
