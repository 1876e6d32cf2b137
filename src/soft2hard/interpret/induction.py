"""Instruction induction: show a model a few solved examples and ask it for the instruction behind them.

This is what a user without soft prompts would try first (Honovich et al. 2022, "Instruction Induction"; the
APE recipe of Zhou et al. 2022), so the evaluation's ``induced`` condition compares translations against it.
The inducer is anything that completes text: the source model, a local target or an OpenAI-compatible API
(:class:`~soft2hard.targets.LazyTarget`, whose API responses go through the evaluation's SQLite cache).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

from soft2hard.tasks.base import Example

# The recipe's wording (METHODS.md section 8); {k} is the number of demonstrations.
INTRO = ("I gave a friend an instruction and {k} inputs. The friend read the instruction and wrote an output for "
         "every one of the inputs. Here are the input-output pairs:")
OUTRO = "The instruction was"
MAX_TOKENS = 48  # an instruction is one sentence; no stop string, since some models start with a line break

Complete = Callable[[list[str], int, tuple[str, ...]], list[str]]  # (prompts, max_tokens, stop) -> completions


def induction_prompt(demos: Sequence[Example]) -> str:
    """The documented induction prompt for ``demos`` (input-output pairs, in order)."""
    if not demos:
        raise ValueError("instruction induction needs at least one demonstration")
    pairs = "\n\n".join(f"Input: {d.input}\nOutput: {d.target}" for d in demos)
    return f"{INTRO.format(k=len(demos))}\n\n{pairs}\n\n{OUTRO}"


def clean_instruction(completion: str) -> str:
    """The instruction in a completion of :func:`induction_prompt`: its first non-empty line, without a leading
    colon, surrounding quotes or a trailing 'Input:'."""
    lines = (ln.strip().lstrip(":").strip() for ln in completion.splitlines())
    line = next((ln for ln in lines if ln.strip("\"'`")), "")
    if line.lower().startswith("to "):  # "The instruction was to sort the words" -> "Sort the words"
        line = line[3:]
    line = line.strip().strip("\"'`").strip()
    return line[:1].upper() + line[1:]


def induce(complete: Complete, demos: Sequence[Example]) -> dict:
    """Ask ``complete`` for the instruction behind ``demos``: ``{"text", "raw", "n_demos"}``."""
    raw = complete([induction_prompt(demos)], MAX_TOKENS, ())[0]
    return {"text": clean_instruction(raw), "raw": raw, "n_demos": len(demos)}


def source_completer(lm) -> Complete:
    """A :data:`Complete` on a :class:`~soft2hard.lm.LanguageModel` (greedy, no soft prompt). A target's own
    ``complete`` (:class:`~soft2hard.targets.LazyTarget`) is one already."""
    return functools.partial(lm.generate, None)
