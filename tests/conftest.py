"""Shared fixtures: tiny random models (fast unit tests) built from configs with the real SmolLM2 tokenizer.

The real built-in models are used by tests marked ``slow``; they share the user cache (``SOFT2HARD_CACHE`` or
~/.cache/soft2hard) so the dequantised copy is built once per machine.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from transformers.utils import logging as hf_logging  # noqa: E402

hf_logging.set_verbosity_error()
hf_logging.disable_progress_bar()


def interrupt_on_call(monkeypatch, module, name: str, call: int) -> None:
    """Make ``module.name`` raise KeyboardInterrupt on its ``call``-th call (an interruption mid-run);
    ``monkeypatch.undo()`` or a later ``setattr`` restores it."""
    real, calls = getattr(module, name), {"n": 0}

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == call:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, interrupted)


def in_ci() -> bool:
    """True where the environment says CI (``CI=true``, as CI services set it)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require(*names: str, executable: bool = False, hint: str = "") -> str:
    """The first of ``names`` that is installed: an importable module, or with ``executable=True`` a program on
    PATH (its full path is returned). When none is, the calling test is skipped, except in CI, where a missing
    component is a failure: CI must run every test. ``@pytest.mark.requires(*names, ...)`` does the same for a
    test, or for a module as ``pytestmark``, before its fixtures run."""
    for name in names:
        if executable:
            path = shutil.which(name)
            if path:
                return path
        elif importlib.util.find_spec(name) is not None:
            return name
    what = "program" if executable else "module"
    message = f"{what} {' / '.join(names)} is not installed" + (f" ({hint})" if hint else "")
    if in_ci():
        pytest.fail(f"{message}; CI runs every test, so a missing component is an error", pytrace=False)
    pytest.skip(message, allow_module_level=True)


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "requires(*names, executable=False, hint=''): skip the test when none of "
                                       "the modules (or programs) is installed; fail it instead in CI (CI=true)")


@pytest.hookimpl(tryfirst=True)  # before the test's fixtures (a server, a model) are set up
def pytest_runtest_setup(item) -> None:
    for mark in item.iter_markers("requires"):
        require(*mark.args, **mark.kwargs)


def user_cache_dir() -> Path:
    env = os.environ.get("SOFT2HARD_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "soft2hard"


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    return user_cache_dir()


@pytest.fixture(scope="session")
def smol_tokenizer(cache_dir):
    from transformers import AutoTokenizer

    from soft2hard.models import model_path

    return AutoTokenizer.from_pretrained(model_path("smollm2-135m", cache_dir))


def _save_tiny(path: Path, config, tokenizer) -> Path:
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, smol_tokenizer) -> Path:
    from transformers import LlamaConfig

    config = LlamaConfig(vocab_size=len(smol_tokenizer), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512, tie_word_embeddings=True,
                         bos_token_id=smol_tokenizer.bos_token_id, eos_token_id=smol_tokenizer.eos_token_id,
                         pad_token_id=smol_tokenizer.pad_token_id)
    return _save_tiny(tmp_path_factory.mktemp("tiny-llama"), config, smol_tokenizer)


@pytest.fixture(scope="session")
def tiny_gemma_dir(tmp_path_factory, smol_tokenizer) -> Path:
    """A 2-block Gemma3 text model: exercises the scaled-embedding path (x sqrt(d)) and sliding attention."""
    from transformers import Gemma3TextConfig

    config = Gemma3TextConfig(vocab_size=len(smol_tokenizer), hidden_size=64, intermediate_size=128,
                              num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1, head_dim=16,
                              max_position_embeddings=512, sliding_window=16,
                              layer_types=["sliding_attention", "full_attention"],
                              bos_token_id=smol_tokenizer.bos_token_id, eos_token_id=smol_tokenizer.eos_token_id,
                              pad_token_id=smol_tokenizer.pad_token_id)
    config.architectures = ["Gemma3ForCausalLM"]
    return _save_tiny(tmp_path_factory.mktemp("tiny-gemma"), config, smol_tokenizer)


@pytest.fixture(scope="session")
def tiny_llama(tiny_llama_dir):
    from soft2hard.models import load_model

    return load_model(str(tiny_llama_dir), device="cpu")


@pytest.fixture(scope="session")
def tiny_gemma(tiny_gemma_dir):
    from soft2hard.models import load_model

    return load_model(str(tiny_gemma_dir), device="cpu")


@pytest.fixture(scope="session")
def smollm2(cache_dir):
    from soft2hard.models import load_model

    return load_model("smollm2-135m", device="cpu", cache_dir=cache_dir)


@pytest.fixture(scope="session")
def gemma3(cache_dir):
    from soft2hard.models import load_model

    return load_model("gemma3-270m", device="cpu", cache_dir=cache_dir)


# --- a tiny dataset of datasets (tests of the DoD builder and the translator) ------------------------------

TASKS = ("gen/plural", "cat/fruit-animal", "gen/first_letter")
TINY_TUNING = {"n_tokens": 4, "steps": 4, "eval_every": 2, "lr": 3e-2, "batch_size": 4, "max_eval_examples": 4,
               "max_test_examples": 4, "init": "vocab"}


def tiny_config(model_dir, **kw):
    from soft2hard.dod.config import BuildConfig

    return BuildConfig(model=str(model_dir), tasks=TASKS, general_heldout=1, amp="none", tuning=TINY_TUNING, **kw)


@pytest.fixture(scope="session")
def tiny_dod(tmp_path_factory, tiny_llama_dir, cache_dir) -> Path:
    """3 tasks x 1 seed x 2 checkpoints on the tiny Llama, built in-process."""
    from soft2hard.dod.build import build

    out = tmp_path_factory.mktemp("dod")
    build(out, tiny_config(tiny_llama_dir), cache_dir, workers=0, progress=False)
    return out


TINY_TRANSLATOR = dict(epochs=2, batch_size=2, save_every=2, lora_r=2, lora_alpha=4, warmup_steps=2)


@pytest.fixture(scope="session")
def tiny_translator(tmp_path_factory, tiny_dod, tiny_llama_dir) -> Path:
    """A translator trained for a few steps on the tiny DoD."""
    from soft2hard.dod.manifest import Manifest
    from soft2hard.interpret.translator import TranslatorConfig
    from soft2hard.interpret.translator_training import train_translator, training_examples
    from soft2hard.models import load_model

    out = tmp_path_factory.mktemp("translator")
    cfg = TranslatorConfig(**TINY_TRANSLATOR)
    examples = training_examples(Manifest.load(tiny_dod), cfg)
    train_translator(load_model(str(tiny_llama_dir), device="cpu"), examples, cfg, out, progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_profile(tmp_path_factory, tiny_llama_dir) -> Path:
    """An InSPEcT profile for the tiny Llama (layer pair 1 -> 1, short outputs)."""
    from soft2hard.interpret.selection import Profile

    path = tmp_path_factory.mktemp("profile") / "tiny.json"
    Profile(model=str(tiny_llama_dir), pairs=[(1, 1)], metric="rouge_l", n_prompts=0,
            inspect={"max_new_tokens": 8}).save(path)
    return path
