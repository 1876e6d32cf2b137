"""InSPEcT: the batched KV-cached grid equals the plain reference loop; hooks never leak; bad input errors."""

import pytest
import torch

from soft2hard.errors import Soft2HardError
from soft2hard.hooks import hooked
from soft2hard.interpret.inspection import (
    InspectConfig,
    continuation_logprobs,
    inspect_grid,
    inspection_prompt,
    source_states,
)
from soft2hard.interpret.projection import project

from .inspect_reference import generate_inspect, reference_inspect, reference_logprob


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
        assert d.text == generate_inspect(lm, prompt, cfg, d.layers), d.layers  # bench/inspect.py's baseline
    assert _hook_count(lm.model) == before


def test_source_states_match_output_hidden_states(tiny_llama):
    prompt = torch.randn(3, tiny_llama.d_model)
    states = source_states(tiny_llama, prompt)
    out = tiny_llama.model(inputs_embeds=prompt[None], output_hidden_states=True)
    # hidden_states[i + 1] is block i's output, except the last one, which has the final norm applied
    assert torch.allclose(states[0], out.hidden_states[1][0], atol=1e-5)


def test_hooks_are_removed_on_error(tiny_llama):
    names = tiny_llama.block_names()
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
    names = tiny_llama.block_names()
    ids = torch.tensor([[5, 6, 7]])
    model = tiny_llama.model
    with torch.no_grad():
        plain = model(input_ids=ids).logits
        replacement = torch.randn(1, 3, tiny_llama.d_model, generator=torch.Generator().manual_seed(0))
        seen = {}

        def observe(t, *, name):  # returns None: observes only
            seen[name] = t.clone()

        with hooked(model, {f"{names[0]}.output": lambda t, *, name: replacement,
                            f"{names[1]}.input": observe}):
            by_output = model(input_ids=ids).logits
        assert torch.equal(seen[f"{names[1]}.input"], replacement)  # block 1 read the replaced block-0 output
        assert not torch.allclose(by_output, plain, atol=1e-3)  # and the replacement reached the logits
        with hooked(model, {f"{names[1]}.input": lambda t, *, name: replacement}):
            by_input = model(input_ids=ids).logits
        assert torch.allclose(by_input, by_output, atol=1e-5)  # replacing block 1's input has the same effect
        with hooked(model, {f"{names[0]}.output": observe, f"{names[1]}.input": observe}):
            observed = model(input_ids=ids).logits
        assert torch.equal(observed, plain)  # observing hooks change nothing
        assert torch.equal(seen[f"{names[0]}.output"], seen[f"{names[1]}.input"])  # block 1 reads block 0's output


@pytest.mark.parametrize("which", ["tiny_llama", "tiny_gemma"])
def test_patching_changes_the_output(request, which):
    """The patch is not a no-op: descriptions and continuation log-probabilities differ from the unpatched run."""
    lm = request.getfixturevalue(which)
    torch.manual_seed(0)
    prompt = lm.vocab_embeddings()[torch.randint(0, 3000, (3,))].clone()
    cfg = InspectConfig(source_layers=[1], target_layers=[0], max_new_tokens=8)
    fast = inspect_grid(lm, prompt, cfg)[0]
    unpatched = reference_inspect(lm, prompt, cfg, (1, 0), patch=False)
    assert fast.text == reference_inspect(lm, prompt, cfg, (1, 0)) == generate_inspect(lm, prompt, cfg, (1, 0))
    assert fast.text != unpatched
    (_, patched_lp), = continuation_logprobs(lm, prompt, cfg, ":", " fruit", pairs=[(1, 0)])
    assert abs(patched_lp - reference_logprob(lm, prompt, cfg, (1, 0), ":", " fruit", patch=False)) > 1e-5


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
        assert d.text == generate_inspect(smollm2, prompt, cfg, d.layers), d.layers


@pytest.mark.slow
def test_batched_grid_equals_reference_on_gemma3(gemma3):
    torch.manual_seed(0)
    prompt = gemma3.vocab_embeddings()[torch.randint(0, 5000, (4,))].clone()  # scaled space
    cfg = InspectConfig(max_new_tokens=12)
    for d in inspect_grid(gemma3, prompt, cfg, pairs=[(4, 4), (12, 3)]):
        assert d.text == reference_inspect(gemma3, prompt, cfg, d.layers), d.layers


@pytest.mark.parametrize("which", ["tiny_llama", "tiny_gemma"])
@pytest.mark.parametrize("inject", ["input", "block0"])
def test_continuation_logprobs_equal_reference(request, which, inject):
    lm = request.getfixturevalue(which)
    torch.manual_seed(0)
    prompt = torch.randn(3, lm.d_model) * float(lm.vocab_embeddings().float().std())
    cfg = InspectConfig(n_demos=2, batch_size=2, inject=inject)
    pairs = [(0, 1), (1, 0), (1, 1)]
    got = continuation_logprobs(lm, prompt, cfg, ": a, b; cues:", " honestly", pairs)
    assert [p for p, _ in got] == pairs
    for pair, value in got:
        assert value == pytest.approx(reference_logprob(lm, prompt, cfg, pair, ": a, b; cues:", " honestly"),
                                      abs=1e-4), pair
    values = [v for _, v in got]
    assert max(values) - min(values) > 1e-4  # the pairs differ: a mixed-up source or target layer would show
