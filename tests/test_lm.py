"""LanguageModel: the efficient paths (LM head at target positions, batched KV-cache greedy decoding with left
padding) must agree with naive full-sequence computations."""

import math

import pytest
import torch
import torch.nn.functional as F

from soft2hard.errors import Soft2HardError

CONTEXTS = ["cat\nAnswer:", "a much longer input sentence here\nAnswer:", "x"]
TARGETS = [" cats", " sentences here\n", " y z"]


def _naive_logprob(lm, prompt, context, target):
    ids = lm.encode(context)
    tgt = lm.encode(target, special=False)
    seq = torch.tensor([ids + tgt])
    emb = lm.embed(seq)
    if prompt is not None:
        emb = torch.cat([prompt[None], emb], dim=1)
    logits = lm.model(inputs_embeds=emb).logits[0].float()  # (T, V)
    logp = F.log_softmax(logits, -1)
    start = emb.shape[1] - len(tgt)
    return sum(float(logp[start + j - 1, t]) for j, t in enumerate(tgt))


@pytest.mark.parametrize("which", ["tiny_llama", "tiny_gemma"])
@pytest.mark.parametrize("with_prompt", [False, True])
def test_target_logprobs_match_full_forward(request, which, with_prompt):
    lm = request.getfixturevalue(which)
    torch.manual_seed(0)
    prompt = torch.randn(5, lm.d_model) if with_prompt else None
    total, count = lm.target_logprobs(prompt, CONTEXTS, TARGETS)
    for i, (c, t) in enumerate(zip(CONTEXTS, TARGETS)):
        assert math.isclose(float(total[i]), _naive_logprob(lm, prompt, c, t), rel_tol=1e-4, abs_tol=1e-4)
        assert int(count[i]) == len(lm.encode(t, special=False))


def _naive_greedy(lm, prompt, context, n):
    ids = lm.encode(context)
    out = []
    for _ in range(n):
        emb = lm.embed(torch.tensor([ids + out]))
        if prompt is not None:
            emb = torch.cat([prompt[None], emb], dim=1)
        out.append(int(lm.model(inputs_embeds=emb).logits[0, -1].argmax()))
    return out


@pytest.mark.parametrize("which", ["tiny_llama", "tiny_gemma"])
def test_batched_generation_matches_naive_greedy(request, which):
    lm = request.getfixturevalue(which)
    torch.manual_seed(1)
    prompt = torch.randn(4, lm.d_model)
    texts = lm.generate(prompt, CONTEXTS, max_new_tokens=6, stop=())
    for c, text in zip(CONTEXTS, texts):
        expected = lm.decode(_naive_greedy(lm, prompt, c, 6))
        assert text == expected


def test_gemma_embedding_scale_is_applied(tiny_gemma):
    assert math.isclose(tiny_gemma.embed_scale, math.sqrt(64), rel_tol=1e-3)
    ids = torch.tensor([[5, 6]])
    w = tiny_gemma.model.get_input_embeddings().weight
    assert torch.allclose(tiny_gemma.embed(ids)[0], w[[5, 6]] * tiny_gemma.embed_scale, atol=1e-5)
    assert torch.allclose(tiny_gemma.vocab_embeddings()[5], w[5] * tiny_gemma.embed_scale, atol=1e-5)


def test_width_mismatch_is_an_error(tiny_llama):
    with pytest.raises(Soft2HardError, match=r"needs \[n, 64\]"):
        tiny_llama.check_prompt(torch.zeros(3, 65))


@pytest.mark.parametrize("which", ["tiny_llama", "tiny_gemma"])
def test_kv_cache_uses_the_current_argument(request, which):
    """Decoding with a prompt's KV cache passes the cache under the argument the installed transformers names
    (``cache`` since the rename; ``past_key_values`` warns there and is due to go)."""
    import inspect
    import warnings

    lm = request.getfixturevalue(which)
    torch.manual_seed(0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lm.generate(torch.randn(3, lm.d_model), CONTEXTS[:2], 4)
    assert not [w for w in caught if "past_key_values" in str(w.message)]
    from soft2hard.lm import _cache_argument

    assert _cache_argument(type(lm.decoder)) in inspect.signature(type(lm.decoder).forward).parameters
