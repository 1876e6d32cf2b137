"""soft2hard.training: the validators, schedule, optimizer-state round trip and publish step every trainer uses."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch

from soft2hard import training
from soft2hard.errors import Soft2HardError
from soft2hard.interpret.translator import TranslatorConfig
from soft2hard.tuning import TuningConfig


@dataclass
class _Cfg:
    n: object = 1
    x: object = 1.0
    kind: object = "a"
    text: object = None


@pytest.mark.parametrize("value, ok", [(1, True), (0, False), (True, False), (False, False), (1.0, False),
                                       ("1", False), (None, False)])
def test_check_ints_rejects_bools_and_non_integers(value, ok):
    cfg = _Cfg(n=value)
    if ok:
        training.check_ints(cfg, "n")
    else:
        with pytest.raises(Soft2HardError, match=r"^n must be a positive integer, got "):
            training.check_ints(cfg, "n")


def test_check_ints_minimum_and_optional():
    training.check_ints(_Cfg(n=0), "n", minimum=0)
    training.check_ints(_Cfg(n=-5), "n", minimum=None)
    training.check_ints(_Cfg(n=None), "n", optional=True)
    with pytest.raises(Soft2HardError, match="n must be a non-negative integer, got -1"):
        training.check_ints(_Cfg(n=-1), "n", minimum=0)
    with pytest.raises(Soft2HardError, match="n must be an integer, got True"):
        training.check_ints(_Cfg(n=True), "n", minimum=None)
    with pytest.raises(Soft2HardError, match="n must be an integer >= 2, got 1"):
        training.check_ints(_Cfg(n=1), "n", minimum=2)


@pytest.mark.parametrize("value", [0, -1.0, float("nan"), float("inf"), True, "1", None, 10**400])
def test_check_numbers_rejects(value):
    with pytest.raises(Soft2HardError, match="x must be a positive number"):
        training.check_numbers(_Cfg(x=value), "x")


def test_check_numbers_non_negative_choice_and_text():
    training.check_numbers(_Cfg(x=0), "x", positive=False)
    training.check_numbers(_Cfg(x=3), "x")
    with pytest.raises(Soft2HardError, match="x must be a non-negative number, got False"):
        training.check_numbers(_Cfg(x=False), "x", positive=False)
    training.check_choice(_Cfg(kind="b"), "kind", ("a", "b"))
    for bad in ("c", ["a"], 1):
        with pytest.raises(Soft2HardError, match="kind must be one of a, b, got "):
            training.check_choice(_Cfg(kind=bad), "kind", ("a", "b"))
    training.check_texts(_Cfg(text="hi"), "text")
    with pytest.raises(Soft2HardError, match="text must be text, got 3"):
        training.check_texts(_Cfg(text=3), "text")


@pytest.mark.parametrize("cls, field", [(TranslatorConfig, "lora_r"), (TranslatorConfig, "batch_size"),
                                        (TranslatorConfig, "warmup_steps"), (TranslatorConfig, "seed"),
                                        (TuningConfig, "n_tokens"), (TuningConfig, "seed"),
                                        (TuningConfig, "patience")])
def test_configs_reject_a_bool_for_an_int(cls, field):
    with pytest.raises(Soft2HardError, match=f"{field} must be"):
        cls(**{field: True})


@pytest.mark.parametrize("bad", [dict(lr=True), dict(lr="1e-3"), dict(weight_decay=-0.1), dict(lora_dropout=1.0),
                                 dict(prompts="some")])
def test_translator_config_rejects(bad):
    with pytest.raises(Soft2HardError, match=next(iter(bad))):
        TranslatorConfig(**bad)


def test_warmup_cosine():
    lr = 0.5
    assert [training.warmup_cosine(s, 10, lr, 4) for s in range(4)] == [lr * (s + 1) / 4 for s in range(4)]
    assert training.warmup_cosine(4, 10, lr, 4) == lr  # the peak right after warmup
    assert math.isclose(training.warmup_cosine(10, 10, lr, 4), 0.1 * lr)  # the floor, kept after the end
    assert training.warmup_cosine(50, 10, lr, 4) == training.warmup_cosine(10, 10, lr, 4)
    assert training.warmup_cosine(0, 1, lr, 0) == lr  # no warmup


def _stepped(opt_cls, params):
    opt = opt_cls(params, lr=0.1)
    for _ in range(3):
        sum((p**2).sum() for p in params).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return opt


@pytest.mark.parametrize("opt_cls", [torch.optim.AdamW, torch.optim.Adafactor])
@pytest.mark.parametrize("names, step_key", [(("",), None), (("opt",), None), (("a.w", "b.w"), None),
                                             (("a.w", "b.w"), "__step__")])
def test_optimizer_state_round_trip_resumes_exactly(opt_cls, names, step_key, tmp_path):
    from safetensors.torch import load_file, save_file

    if len(names) == 1:
        shapes = [(3, 4)]
    else:
        shapes = [(3, 4), (5,)]
    torch.manual_seed(0)
    start = [torch.randn(s) for s in shapes]
    params = [torch.nn.Parameter(t.clone()) for t in start]
    opt = _stepped(opt_cls, params)
    flat = training.optimizer_tensors(opt, dict(zip(names, params)), step_key)
    if step_key:
        assert step_key in flat and not any(k.endswith(".step") for k in flat)
    save_file({k: v.contiguous() for k, v in flat.items()}, str(tmp_path / "opt.safetensors"))

    copies = [torch.nn.Parameter(p.detach().clone()) for p in params]
    opt2 = opt_cls(copies, lr=0.1)
    training.load_optimizer_tensors(opt2, dict(zip(names, copies)), load_file(str(tmp_path / "opt.safetensors")),
                                    step_key)
    for p, q in zip(params, copies):
        assert opt.state[p].keys() == opt2.state[q].keys()
        assert opt2.state[q]["step"].shape == () and opt2.state[q]["step"].device.type == "cpu"
    for o, ps in ((opt, params), (opt2, copies)):  # the same next steps from either optimizer
        for _ in range(2):
            sum((p**2).sum() for p in ps).backward()
            o.step()
            o.zero_grad(set_to_none=True)
    assert all(torch.equal(p, q) for p, q in zip(params, copies))


def test_optimizer_tensors_skip_parameters_without_state():
    p = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.AdamW([p])
    assert training.optimizer_tensors(opt, {"": p}) == {}
    training.load_optimizer_tensors(opt, {"": p}, {})
    assert not opt.state[p]


def test_optimizer_tensors_tuning_layout():
    """The prompt's optimizer file keeps the keys tuning checkpoints have always had."""
    p = torch.nn.Parameter(torch.ones(2, 3))
    opt = _stepped(torch.optim.AdamW, [p])
    flat = training.optimizer_tensors(opt, {"": p})
    assert sorted(flat) == ["exp_avg", "exp_avg_sq", "step"] and flat["step"].tolist() == [3.0]


def test_publish_moves_every_file_up_and_removes_the_staging_folder(tmp_path):
    (tmp_path / "old.json").write_text("keep")

    def write(folder):
        folder.mkdir()
        (folder / "a.safetensors").write_text("a")
        (folder / "old.json").write_text("new")

    training.publish(tmp_path, write)
    assert (tmp_path / "a.safetensors").read_text() == "a" and (tmp_path / "old.json").read_text() == "new"
    assert not (tmp_path / training.STAGING).exists()
