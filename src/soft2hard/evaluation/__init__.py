"""Side-by-side evaluation: a soft prompt on its source model next to text prompts on target models."""

from soft2hard.evaluation.conditions import CONDITIONS, DEFAULT_CONDITIONS, score_outputs
from soft2hard.evaluation.run import EvalConfig, evaluate, summarize
from soft2hard.evaluation.source import EvalTask, SourceSide
from soft2hard.targets import LazyTarget, TargetsConfig, open_targets

__all__ = ["CONDITIONS", "DEFAULT_CONDITIONS", "EvalConfig", "EvalTask", "LazyTarget", "SourceSide", "TargetsConfig",
           "evaluate", "open_targets", "score_outputs", "summarize"]
