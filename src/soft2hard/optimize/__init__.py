"""Interpretable hard-prompt optimization (METHODS.md section 6): discrete prompts searched directly."""

from soft2hard.optimize.pez import PezConfig, optimize_pez, project_straight_through
from soft2hard.optimize.rlprompt import RLPromptConfig, optimize_rlprompt

__all__ = ["PezConfig", "RLPromptConfig", "optimize_pez", "optimize_rlprompt", "project_straight_through"]
