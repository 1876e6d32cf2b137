"""The original InSPEcT loop, written plainly, as the reference the fast implementation is tested against.

Per (source, target) pair: a fresh source pass; then greedy decoding without a KV cache, re-running the whole
sequence at every step and re-patching the placeholders each time (as the official code did, minus its bugs:
the stop rule fires here).
"""

import torch

from soft2hard.hooks import block_names, hooked
from soft2hard.interpret.inspection import _clean, _stop, inspection_prompt, source_states


@torch.no_grad()
def reference_inspect(lm, prompt, cfg, pair):
    s, t = pair
    names = block_names(lm.model)
    n = prompt.shape[0]
    states = source_states(lm, prompt, cfg.inject)  # recomputed for every pair, like the original
    ids, start = inspection_prompt(lm, cfg, n)

    def patch(hidden, *, name):
        hidden = hidden.clone()
        hidden[0, start:start + n] = states[s].to(hidden.dtype)
        return hidden

    generated = []
    for _ in range(cfg.max_new_tokens):
        seq = torch.tensor([ids + generated])
        with hooked(lm.model, {f"{names[t]}.output": patch}):
            logits = lm.model(input_ids=seq).logits[0, -1]
        tok = int(logits.argmax())
        if tok == lm.tokenizer.eos_token_id:
            break
        generated.append(tok)
        if _stop(lm.decode(generated)):
            break
    return _clean(lm.decode(generated))
