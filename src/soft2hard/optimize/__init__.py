"""Interpretable hard-prompt optimization (METHODS.md section 6): discrete prompts searched directly."""

from soft2hard.optimize.pez import PezConfig, optimize_pez, project_straight_through

__all__ = ["PezConfig", "optimize_pez", "project_straight_through"]
