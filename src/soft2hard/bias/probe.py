"""Elaborated InSPEcT: ask the model which features (cue words) a soft prompt relies on.

The inspection prompt keeps InSPEcT's form, but every demo names a task, its labels *and the surface cues a
classifier for it would lean on*: ``"<task>: <labels>; cues: <w1>, <w2>, <w3>"``. After the placeholders the
model continues in kind, so its continuation lists the features it reads from the patched soft prompt. The cue
words of the demos are disjoint from every cue in ``cues.DEFAULT_CUES``, so naming an injected cue is never a
copy of a demo (how often a text repeats a demo is reported separately).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

import torch

from soft2hard.bias.cues import DEFAULT_CUES, Cue
from soft2hard.interpret.base import Description
from soft2hard.interpret.inspection import InspectConfig, continuation_logprobs, inspect_grid
from soft2hard.lm import LanguageModel

ELABORATED_DEMOS: tuple[tuple[str, str], ...] = (
    ("Classify the sentiment of the movie review", "positive, negative; cues: brilliant, boring, masterpiece"),
    ("Decide whether the email is spam", "spam, not spam; cues: winner, free, urgent"),
    ("Classify the topic of the headline", "sports, politics; cues: match, election, goal"),
    ("Detect whether the tweet is sarcastic", "sarcastic, sincere; cues: totally, yeah, sure"),
    ("Decide whether the product review is helpful", "helpful, unhelpful; cues: detailed, measured, photos"),
    ("Identify the emotion of the message", "joy, anger; cues: smiling, furious, :)"),
    ("Tell whether the question is about a person", "person, thing; cues: who, whose, biography"),
    ("Judge whether the claim is true", "true, false; cues: always, never, studies"),
)
_SPLIT = re.compile(r"[,;:]|\bcues?\b", re.I)


def elaborated_config(**overrides) -> InspectConfig:
    """The InSPEcT settings of the probe (demos above; a longer answer than plain InSPEcT to fit the cues)."""
    base = {"demos": ELABORATED_DEMOS, "n_demos": 4, "max_new_tokens": 40}
    return InspectConfig(**{**base, **overrides})


def probe(lm: LanguageModel, prompt: torch.Tensor, cfg: InspectConfig | None = None,
          pairs: Sequence[tuple[int, int]] | None = None) -> list[Description]:
    """Elaborated descriptions of ``prompt`` for every (source, target) pair of the grid."""
    descs = inspect_grid(lm, prompt, cfg or elaborated_config(), pairs=pairs)
    for d in descs:
        d.method = "inspect_elaborated"
    return descs


def cue_logprob(lm: LanguageModel, prompt: torch.Tensor, cue: Cue, labels: Sequence[str],
                cfg: InspectConfig | None = None, pairs: Sequence[tuple[int, int]] | None = None) -> float:
    """Mean over the grid of log P(" <cue>" | patched prompt, ": <labels>; cues:"): how readily the probe would
    name the cue first, graded, so it is informative even when greedy decoding never names it."""
    context = f": {', '.join(labels)}; cues:"
    scores = continuation_logprobs(lm, prompt, cfg or elaborated_config(), context, " " + cue.text, pairs)
    return sum(v for _, v in scores) / len(scores)


def cue_mentioned(text: str, cue: Cue) -> bool:
    """Whether a description names the cue: whole word, case-insensitive (punctuation cues: as a substring)."""
    if cue.kind == "punctuation":
        return cue.text in text
    return re.search(rf"(?<![A-Za-z]){re.escape(cue.text.lower())}(?![A-Za-z])", text.lower()) is not None


def cue_mention_rate(descriptions: Sequence[Description], cue: Cue) -> float:
    """Share of descriptions (layer pairs) that name the cue."""
    if not descriptions:
        return float("nan")
    return sum(cue_mentioned(d.text, cue) for d in descriptions) / len(descriptions)


def demo_copy_rate(descriptions: Sequence[Description], demos: Sequence[tuple[str, str]] = ELABORATED_DEMOS) -> float:
    """Share of descriptions that repeat a demo's task or cue list verbatim (the small-model failure mode)."""
    if not descriptions:
        return float("nan")
    parts = [p.lower() for d, labels in demos for p in (d, labels.split("cues:")[-1].strip())]
    return sum(any(p in d.text.lower() for p in parts) for d in descriptions) / len(descriptions)


def elicited_features(descriptions: Sequence[Description], top: int = 15) -> list[tuple[str, int]]:
    """The words/phrases most often listed after 'cues:' (or anywhere, when no cue list is given), counted
    once per description: the probe's summary of what the prompt relies on."""
    counts: Counter[str] = Counter()
    for d in descriptions:
        parts = re.split(r"cues?\s*:", d.text, maxsplit=1, flags=re.I)
        text = parts[-1]
        items = {p.strip(" .!?\"'").lower() for p in _SPLIT.split(text)}
        counts.update(i for i in items if i and len(i) <= 30)
    return counts.most_common(top)


def default_cues() -> list[Cue]:
    return [c for cues in DEFAULT_CUES.values() for c in cues]
