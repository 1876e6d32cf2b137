"""SoftPrompt I/O: PEFT round trips both ways (same logits), plain safetensors, and every bad prompt file."""

import json

import pytest
import torch
from safetensors.torch import save_file

from soft2hard.errors import Soft2HardError
from soft2hard.prompts import SoftPrompt

TEXTS = ["The plural of cat is", "hello"]


def _our_logits(lm, prompt, texts):
    embeds, mask, _, _ = lm.build_batch(texts)
    hidden = lm.forward_text(prompt, embeds, mask)[0].last_hidden_state
    return lm.logits_from_hidden(hidden), mask


def _peft_logits(model_dir, adapter_dir, lm, texts):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    peft_model = PeftModel.from_pretrained(base, adapter_dir).eval()
    enc = lm.tokenizer(texts, return_tensors="pt", padding=True, padding_side="right")
    with torch.no_grad():
        return peft_model(input_ids=enc.input_ids, attention_mask=enc.attention_mask).logits.float()


def check_peft_loads_ours(lm, model_dir, tmp_path):
    torch.manual_seed(0)
    prompt = SoftPrompt(torch.randn(7, lm.d_model) * 0.5, model=str(model_dir), metadata={"task": "t"})
    prompt.save(tmp_path / "adapter")
    ours, mask = _our_logits(lm, prompt.tensor, TEXTS)
    theirs = _peft_logits(model_dir, tmp_path / "adapter", lm, TEXTS)[:, prompt.n_tokens:]  # text positions
    assert theirs.shape == ours.shape
    keep = mask.bool()
    assert torch.allclose(ours[keep], theirs[keep], atol=2e-4, rtol=1e-4)


def check_ours_loads_peft(lm, model_dir, tmp_path):
    from peft import PromptTuningConfig, PromptTuningInit, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    cfg = PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=6, prompt_tuning_init=PromptTuningInit.RANDOM)
    peft_model = get_peft_model(base, cfg)
    with torch.no_grad():
        peft_model.prompt_encoder["default"].embedding.weight.normal_(0, 0.3)
    peft_model.save_pretrained(tmp_path / "peft")
    loaded = SoftPrompt.load(tmp_path / "peft")
    assert loaded.tensor.shape == (6, lm.d_model)
    assert torch.equal(loaded.tensor, peft_model.prompt_encoder["default"].embedding.weight.detach())
    ours, mask = _our_logits(lm, loaded.tensor, TEXTS)
    enc = lm.tokenizer(TEXTS, return_tensors="pt", padding=True, padding_side="right")
    with torch.no_grad():
        theirs = peft_model.eval()(input_ids=enc.input_ids, attention_mask=enc.attention_mask).logits.float()
    theirs = theirs[:, loaded.n_tokens:]
    keep = mask.bool()
    assert torch.allclose(ours[keep], theirs[keep], atol=2e-4, rtol=1e-4)


@pytest.mark.parametrize("which", ["tiny_llama", "tiny_gemma"])
def test_peft_round_trips_tiny(request, which, tmp_path):
    lm = request.getfixturevalue(which)
    model_dir = request.getfixturevalue(which + "_dir")
    check_peft_loads_ours(lm, model_dir, tmp_path)
    check_ours_loads_peft(lm, model_dir, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["smollm2-135m", "gemma3-270m"])
def test_peft_round_trips_builtin(request, name, cache_dir, tmp_path):
    from soft2hard.models import model_path

    lm = request.getfixturevalue({"smollm2-135m": "smollm2", "gemma3-270m": "gemma3"}[name])
    model_dir = model_path(name, cache_dir)
    check_peft_loads_ours(lm, model_dir, tmp_path)
    check_ours_loads_peft(lm, model_dir, tmp_path)


def test_save_load_is_lossless(tmp_path):
    t = torch.randn(4, 16)
    SoftPrompt(t, "m", {"seed": 3}).save(tmp_path / "p")
    back = SoftPrompt.load(tmp_path / "p")
    assert torch.equal(back.tensor, t) and back.model == "m" and back.metadata["seed"] == 3
    config = json.loads((tmp_path / "p" / "adapter_config.json").read_text())
    assert config["peft_type"] == "PROMPT_TUNING" and config["num_virtual_tokens"] == 4 and config["token_dim"] == 16
    assert not [p for p in (tmp_path).iterdir() if p.name.startswith(".")], "temporary files left behind"


def test_plain_safetensors_loads(tmp_path):
    t = torch.randn(3, 8)
    save_file({"whatever": t}, tmp_path / "p.safetensors")
    assert torch.equal(SoftPrompt.load(tmp_path / "p.safetensors").tensor, t)


def _bad(tmp_path, name, make):
    path = tmp_path / name
    make(path)
    with pytest.raises(Soft2HardError) as err:
        SoftPrompt.load(path)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg
    return msg


def test_bad_prompt_files(tmp_path):
    assert "NaN/Inf" in _bad(tmp_path, "nan.safetensors",
                             lambda p: save_file({"x": torch.tensor([[1.0, float("nan")]])}, p))
    assert "NaN/Inf" in _bad(tmp_path, "inf.safetensors",
                             lambda p: save_file({"x": torch.tensor([[1.0, float("inf")]])}, p))
    assert "pickle" in _bad(tmp_path, "p.pt", lambda p: torch.save(torch.zeros(2, 2), p))
    assert "not a valid safetensors" in _bad(tmp_path, "junk.safetensors", lambda p: p.write_bytes(b"\x00junk" * 10))
    assert "found 2" in _bad(tmp_path, "two.safetensors",
                             lambda p: save_file({"a": torch.zeros(2, 2), "b": torch.zeros(2, 2)}, p))
    assert "[n, d]" in _bad(tmp_path, "vec.safetensors", lambda p: save_file({"a": torch.zeros(4)}, p))
    assert "float" in _bad(tmp_path, "int.safetensors",
                           lambda p: save_file({"a": torch.zeros(2, 2, dtype=torch.int64)}, p))
    assert "does not exist" in _bad(tmp_path, "missing.safetensors", lambda p: None)

    def lora_dir(p):
        p.mkdir()
        (p / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    assert "PROMPT_TUNING" in _bad(tmp_path, "lora", lora_dir)

    def pickle_dir(p):
        p.mkdir()
        (p / "adapter_config.json").write_text(json.dumps({"peft_type": "PROMPT_TUNING"}))
        torch.save({"prompt_embeddings": torch.zeros(2, 2)}, p / "adapter_model.bin")
    assert "pickle" in _bad(tmp_path, "bin", pickle_dir)

    def bad_json(p):
        p.mkdir()
        (p / "adapter_config.json").write_text("{nope")
    assert "invalid JSON" in _bad(tmp_path, "badjson", bad_json)

    def mismatch(p):
        SoftPrompt(torch.zeros(3, 4)).save(p)
        cfg = json.loads((p / "adapter_config.json").read_text())
        cfg["num_virtual_tokens"] = 9
        (p / "adapter_config.json").write_text(json.dumps(cfg))
    assert "num_virtual_tokens=9" in _bad(tmp_path, "mismatch", mismatch)
