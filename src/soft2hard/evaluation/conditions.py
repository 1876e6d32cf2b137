"""What each evaluation condition sends to a target model, and how an output is scored.

Prompts on the target follow the translator paper's format, ``"{instruction}\\n\\nInput:\\n{x}\\n\\nOutput:\\n"``;
zero-shot drops the instruction and few-shot replaces it with k solved examples; ``TEXT+few_shot`` puts the
text before those same examples. Every condition, the soft
prompt on the source model included, is scored from its greedy output: the first non-empty line, compared with
the gold label (classification: accuracy, a label counts when the line is the label or starts with it) or the
gold text (generation: ROUGE-L as the score, exact match beside it).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from soft2hard.metrics import rouge_l
from soft2hard.tasks.base import Example, Task

SOURCE_CONDITIONS = ("soft_prompt",)  # run on the source model with the soft prompt itself
# an instruction text on the target, made on the source side
TEXT_CONDITIONS = ("reference", "projection", "inspect", "translator", "translator_selected", "induced", "pez",
                   "rlprompt")
# a text followed by the few-shot condition's demos: does the text add anything to examples?
WITH_DEMOS = {"translator+few_shot": "translator", "reference+few_shot": "reference"}
TARGET_CONDITIONS = ("zero_shot", "few_shot", *TEXT_CONDITIONS, *WITH_DEMOS)
CONDITIONS = SOURCE_CONDITIONS + TARGET_CONDITIONS
NEEDS_SOFT_PROMPT = ("soft_prompt", "projection", "inspect", "translator", "translator_selected",
                     "translator+few_shot")
DEFAULT_CONDITIONS = ("soft_prompt", "zero_shot", "few_shot", "reference", "projection", "inspect", "translator",
                      "translator_selected", "induced", "translator+few_shot", "reference+few_shot")
STOP = ("\n\n",)  # the answer is the first non-empty line; a blank line ends it
_PUNCT = ".,;:!?\"'`()[]"


def query(x: str) -> str:
    return f"Input:\n{x}\n\nOutput:\n"


def instructed(instruction: str, x: str) -> str:
    return f"{instruction}\n\n{query(x)}"


def few_shot_demos(train: Sequence[Example], k: int, seed: int) -> list[Example]:
    """k solved examples drawn (seeded) from the training split: the same demos for every test input."""
    return random.Random(seed).sample(list(train), min(k, len(train)))


def few_shot(demos: Sequence[Example], x: str) -> str:
    return "".join(f"{query(d.input)}{d.target}\n\n" for d in demos) + query(x)


def text_of(condition: str) -> str:
    """The text condition whose text ``condition`` sends (itself, or the text before the demos)."""
    return WITH_DEMOS.get(condition, condition)


def uses_demos(condition: str) -> bool:
    return condition == "few_shot" or condition in WITH_DEMOS


def target_prompts(condition: str, examples: Sequence[Example], instruction: str | None = None,
                   demos: Sequence[Example] = ()) -> list[str]:
    """The prompts a target model completes for ``condition`` (``instruction`` for the text conditions)."""
    if condition == "zero_shot":
        return [query(ex.input) for ex in examples]
    if condition == "few_shot":
        return [few_shot(demos, ex.input) for ex in examples]
    if instruction is None:
        raise ValueError(f"condition {condition!r} needs an instruction text")
    if not instruction.strip():  # an empty text (translator_selected when nothing was verified) sends nothing
        return [few_shot(demos, ex.input) if condition in WITH_DEMOS else query(ex.input) for ex in examples]
    if condition in WITH_DEMOS:
        return [f"{instruction}\n\n{few_shot(demos, ex.input)}" for ex in examples]
    return [instructed(instruction, ex.input) for ex in examples]


def max_answer_tokens(task: Task, examples: Sequence[Example]) -> int:
    """A generous token budget from the longest gold answer (about 4 characters a token; 2 assumed)."""
    longest = max(len(lab) for lab in task.labels) if task.labels else max(len(ex.target) for ex in examples)
    return min(96, max(8, longest // 2 + 8))


def answer_line(output: str) -> str:
    for line in output.splitlines():
        if line.strip():
            return line.strip()
    return ""


def normalize(text: str) -> str:
    return " ".join(text.lower().split()).strip(_PUNCT).strip()


def match_label(output: str, labels: Sequence[str]) -> str | None:
    """The label that the answer line is, or starts with (longest label first); None when none fits."""
    line = normalize(answer_line(output))
    for label in sorted(labels, key=len, reverse=True):
        lab = normalize(label)
        if lab and (line == lab or (line.startswith(lab) and not line[len(lab)].isalnum())):
            return label
    return None


def score_outputs(task: Task, outputs: Sequence[str], golds: Sequence[str]) -> dict:
    """score (accuracy or ROUGE-L), exact_match, rouge_l (generation only) and n."""
    if len(outputs) != len(golds) or not golds:
        raise ValueError("score_outputs needs one output per gold answer, and at least one")
    lines = [answer_line(o) for o in outputs]
    exact = sum(normalize(a) == normalize(g) for a, g in zip(lines, golds)) / len(golds)
    if task.labels is not None:
        acc = sum(match_label(o, task.labels) == g for o, g in zip(outputs, golds)) / len(golds)
        return {"metric": "accuracy", "score": acc, "exact_match": exact, "rouge_l": None, "n": len(golds)}
    rl = sum(rouge_l(lines, list(golds))) / len(golds)
    return {"metric": "rouge_l", "score": rl, "exact_match": exact, "rouge_l": rl, "n": len(golds)}
