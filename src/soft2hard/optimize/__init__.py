"""Interpretable hard-prompt optimization (METHODS.md section 6): discrete prompts searched directly.

:data:`METHODS` is the one table of what differs between the optimizers: their config, their entry point, what
their interpretability ``weight`` means, and the settings only one of them has. Both return an
:class:`OptimizedPrompt`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from soft2hard.errors import Soft2HardError
from soft2hard.optimize.base import OptimizedPrompt
from soft2hard.optimize.pez import PezConfig, optimize_pez, project_straight_through
from soft2hard.optimize.rlprompt import RLPromptConfig, optimize_rlprompt


@dataclass(frozen=True)
class Optimizer:
    name: str
    label: str  # how the docs and messages write it
    config: type  # PezConfig | RLPromptConfig; both have n_tokens, steps, batch_size, lr, weight, seed
    run: Callable[..., OptimizedPrompt]  # (lm, task, cfg, out, resume=, overwrite=, progress=)
    weight: str  # what the interpretability weight means
    only: tuple[str, ...] = ()  # config fields that no other method has
    generation: bool = True  # whether it handles generation tasks (RLPrompt: classification only)


METHODS: dict[str, Optimizer] = {
    "pez": Optimizer("pez", "PEZ", PezConfig, optimize_pez,
                     "fluency weight w in [0, 1]: loss = (1-w)*task + w*fluency"),
    "rlprompt": Optimizer("rlprompt", "RLPrompt", RLPromptConfig, optimize_rlprompt,
                          "perplexity penalty lambda >= 0: reward -= lambda * log-perplexity of the prompt",
                          only=("samples_per_step", "top_k", "sql_loss", "reward_scale"), generation=False),
}


def get_optimizer(name: str) -> Optimizer:
    if name not in METHODS:
        raise Soft2HardError(f"unknown optimizer {name!r}; choose one of {', '.join(METHODS)}")
    return METHODS[name]


def run_one(lm, task, method: str, cfg, out: Path, resume: bool = False, overwrite: bool = False,
            progress: bool = True) -> OptimizedPrompt:
    """One optimizer run of ``method`` into ``out`` (resumable)."""
    return get_optimizer(method).run(lm, task, cfg, out, resume=resume, overwrite=overwrite, progress=progress)


__all__ = ["METHODS", "OptimizedPrompt", "Optimizer", "PezConfig", "RLPromptConfig", "get_optimizer",
           "optimize_pez", "optimize_rlprompt", "project_straight_through", "run_one"]
