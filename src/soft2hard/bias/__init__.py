"""Bias probing: cue-biased training tasks and the biased prediction rate of a prompt (METHODS.md §3 item 6)."""

from soft2hard.bias.cues import (
    DEFAULT_CUES,
    BiasedSplits,
    Cue,
    biased_prediction_rate,
    build_biased_task,
    parse_cue,
)

__all__ = ["DEFAULT_CUES", "BiasedSplits", "Cue", "biased_prediction_rate", "build_biased_task", "parse_cue"]
