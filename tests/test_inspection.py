"""InSPEcT: the batched KV-cached grid equals the plain reference loop; hooks never leak; bad input errors."""

import pytest
import torch

from soft2hard.errors import Soft2HardError
from soft2hard.hooks import block_names, hooked
from soft2hard.interpret.inspection import InspectConfig, inspect_grid, inspection_prompt, source_states
from soft2hard.interpret.projection import project

from .inspect_reference import reference_inspect


def _hook_count(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.mark.parametrize("which", ["tiny_llama", "tiny_gemma"])
@pytest.mark.parametrize("inject", ["input", "block0"])
def test_batched_grid_equals_reference(request, which, inject):
    lm = request.getfixturevalue(which)
    torch.manual_seed(0)
    prompt = lm.vocab_embeddings()[torch.randint(0, 3000, (3,))].clone()
    cfg = InspectConfig(source_layers=[0, 1], target_layers=[0, 1], max_new_tokens=8, inject=inject, batch_size=3)
    before = _hook_count(lm.model)  # transformers keeps a few hooks of its own
    fast = inspect_grid(lm, prompt, cfg)
    assert len(fast) == 4 and _hook_count(lm.model) == before
    for d in fast:
        assert d.text == reference_inspect(lm, prompt, cfg, d.layers), d.layers


def test_source_states_match_output_hidden_states(tiny_llama):
    prompt = torch.randn(3, tiny_llama.d_model)
    states = source_states(tiny_llama, prompt)
    out = tiny_llama.model(inputs_embeds=prompt[None], output_hidden_states=True)
    # hidden_states[i + 1] is block i's output, except the last one, which has the final norm applied
    assert torch.allclose(states[0], out.hidden_states[1][0], atol=1e-5)


def test_hooks_are_removed_on_error(tiny_llama):
    names = block_names(tiny_llama.model)
    before = _hook_count(tiny_llama.model)

    def boom(t, *, name):
        raise RuntimeError("inside hook")

    with pytest.raises(RuntimeError, match="inside hook"):
        with hooked(tiny_llama.model, {f"{names[0]}.output": boom}):
            tiny_llama.model(input_ids=torch.tensor([[1, 2]]))
    assert _hook_count(tiny_llama.model) == before
    with pytest.raises(Soft2HardError, match="no module"):
        with hooked(tiny_llama.model, {"model.nope.3.output": boom}):
            pass
    assert _hook_count(tiny_llama.model) == before


def test_hook_replacement_and_input_hooks(tiny_llama):
    names = block_names(tiny_llama.model)
    seen = {}
    ids = torch.tensor([[5, 6, 7]])
    with hooked(tiny_llama.model, {f"{names[1]}.input": lambda t, *, name: seen.setdefault("in", t.clone()),
                                   f"{names[0]}.output": lambda t, *, name: seen.setdefault("out", t.clone())}):
        tiny_llama.model(input_ids=ids)
    assert torch.allclose(seen["in"], seen["out"])  # block 1 reads block 0's output


def test_bad_inputs(tiny_llama):
    prompt = torch.randn(3, tiny_llama.d_model)
    with pytest.raises(Soft2HardError, match="out of range"):
        inspect_grid(tiny_llama, prompt, InspectConfig(source_layers=[5], target_layers=[0]))
    with pytest.raises(Soft2HardError, match="empty"):
        inspect_grid(tiny_llama, prompt, InspectConfig(source_layers=[], target_layers=[0]))
    with pytest.raises(Soft2HardError, match=r"\[n, 64\]"):
        inspect_grid(tiny_llama, torch.randn(3, 65), InspectConfig(source_layers=[0], target_layers=[0]))
    with pytest.raises(Soft2HardError, match="inject"):
        InspectConfig(inject="middle")
    with pytest.raises(Soft2HardError, match="one token"):
        inspection_prompt(tiny_llama, InspectConfig(placeholder=" xylophone-marimba"), 3)


def test_projection_recovers_vocabulary_rows(tiny_gemma):
    ids = [100, 2000, 345]
    prompt = tiny_gemma.vocab_embeddings()[ids].clone()  # scaled space, as soft prompts are
    for metric in ("cosine", "l2"):
        d = project(tiny_gemma, prompt, metric)
        assert d.details["token_ids"] == ids and d.method == "projection"
    assert all(abs(v - 1) < 1e-4 for v in project(tiny_gemma, prompt).details["cosine"])


@pytest.mark.slow
def test_batched_grid_equals_reference_on_smollm2(smollm2):
    torch.manual_seed(0)
    prompt = smollm2.vocab_embeddings()[torch.randint(0, 5000, (5,))].clone() * 1.5
    pairs = [(3, 3), (10, 5), (20, 2), (28, 28)]
    cfg = InspectConfig(max_new_tokens=20)
    fast = inspect_grid(smollm2, prompt, cfg, pairs=pairs)
    for d in fast:
        assert d.text == reference_inspect(smollm2, prompt, cfg, d.layers), d.layers


@pytest.mark.slow
def test_batched_grid_equals_reference_on_gemma3(gemma3):
    torch.manual_seed(0)
    prompt = gemma3.vocab_embeddings()[torch.randint(0, 5000, (4,))].clone()  # scaled space
    cfg = InspectConfig(max_new_tokens=12)
    for d in inspect_grid(gemma3, prompt, cfg, pairs=[(4, 4), (12, 3)]):
        assert d.text == reference_inspect(gemma3, prompt, cfg, d.layers), d.layers


def test_continuation_logprobs_match_one_uncached_patched_pass(tiny_llama):
    from soft2hard.hooks import block_names, hooked
    from soft2hard.interpret.inspection import (
        InspectConfig,
        continuation_logprobs,
        inspection_prompt,
        source_states,
    )

    torch.manual_seed(0)
    prompt = torch.randn(3, tiny_llama.d_model) * 0.05
    cfg = InspectConfig(n_demos=2, batch_size=2)
    pairs = [(0, 1), (1, 0), (1, 1)]
    got = continuation_logprobs(tiny_llama, prompt, cfg, ": a, b; cues:", " honestly", pairs)
    assert [p for p, _ in got] == pairs
    names = block_names(tiny_llama.model)
    states = source_states(tiny_llama, prompt)
    ids, start = inspection_prompt(tiny_llama, cfg, 3)
    ctx = tiny_llama.encode(": a, b; cues:", special=False)
    tgt = tiny_llama.encode(" honestly", special=False)
    seq = torch.tensor([ids + ctx + tgt])
    for (s, t), value in got:
        def patch(h, *, name, s=s):
            h = h.clone()
            h[0, start:start + 3] = states[s].to(h.dtype)
            return h
        with hooked(tiny_llama.model, {f"{names[t]}.output": patch}), torch.no_grad():
            logits = tiny_llama.model(input_ids=seq).logits[0].float()
        first = len(ids) + len(ctx)
        lp = logits[first - 1:first - 1 + len(tgt)].log_softmax(-1)
        expected = float(lp.gather(1, torch.tensor(tgt)[:, None]).sum())
        assert value == pytest.approx(expected, abs=1e-4)
