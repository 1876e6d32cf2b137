"""The source side of an evaluation: the soft prompt on its own model, and the texts that interpret it.

Everything here runs on the source model (the one the prompts were tuned on): the soft prompt's own outputs,
the projection / InSPEcT / translator / PEZ / RLPrompt texts, and each text's faithfulness (does the text make
the source model behave like the soft prompt?) and scrutability (perplexity under the source model, word
validity).
Models and interpreters load on first use, so a resumed evaluation whose source work is done loads none.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from soft2hard.evaluation.conditions import STOP, answer_line
from soft2hard.faithfulness import faithfulness, scrutability
from soft2hard.tasks.base import Example, Task

logger = logging.getLogger(__name__)


@dataclass
class EvalTask:
    """A task to evaluate, with the soft prompt tuned on it (if any) and the split seed it was tuned with."""

    task: Task  # restricted exactly as when the prompt was tuned, so the test split is the one it never saw
    reference: str  # the reference description (the DoD's, when the prompt comes from a DoD)
    prompt: torch.Tensor | None = None
    split_seed: int = 0
    origin: str = ""  # where the prompt came from (a file or a DoD prompt id)
    dod_kind: str | None = None  # general | classification | distilled: picks the translator's cue

    @property
    def kind(self) -> str:
        return self.task.kind

    @property
    def name(self) -> str:
        return self.task.name

    def test(self, n: int) -> tuple[Example, ...]:
        return self.task.splits(seed=self.split_seed).test[:n]

    def train(self) -> tuple[Example, ...]:
        return self.task.splits(seed=self.split_seed).train


def seen_in_training(task: str, method: str, seen: bool) -> dict:
    """``{"seen_in_training": True}`` and a warning when the artefact behind ``method`` (the InSPEcT profile's
    calibration prompts, the translator's training prompts) included a prompt of ``task``; else ``{}``."""
    if not seen:
        return {}
    artefact = "InSPEcT profile was calibrated" if method.startswith("inspect") else "translator was trained"
    logger.warning("warning: the %s on prompts of %s, so %s's result on it is not a held-out result "
                   "(seen_in_training: true)", artefact, task, method)
    return {"seen_in_training": True}


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "__", name)


class SourceSide:
    """The source model plus the interpreters, each loaded once, on first use."""

    def __init__(self, model: str, cache_dir: Path, device: str = "auto", dtype: str = "float32",
                 amp: str = "none", translator_dir: Path | None = None, profile: Path | None = None,
                 progress: bool = True, lm=None) -> None:
        """``lm``: the source model when the caller has it loaded already."""
        self.model_name, self.cache_dir, self.device, self.dtype, self.amp = model, cache_dir, device, dtype, amp
        self.translator_dir, self.profile_path, self.progress = translator_dir, profile, progress
        self._lm, self._translator, self._profile = lm, None, None

    @property
    def lm(self):
        if self._lm is None:
            from soft2hard.models import load_model

            logger.info("loading the source model %s", self.model_name)
            self._lm = load_model(self.model_name, device=self.device, dtype=self.dtype, cache_dir=self.cache_dir,
                                  amp=self.amp)
        return self._lm

    @property
    def name(self) -> str:
        return self.lm.name

    def translator(self):
        if self._translator is None:  # LoRA changes the model it wraps: the translator gets its own copy
            from soft2hard.interpret.translator import load_translator, shipped_translator
            from soft2hard.models import load_model

            copy = load_model(self.model_name, device=self.device, dtype=self.dtype, cache_dir=self.cache_dir,
                              amp=self.amp)
            self._translator = load_translator(copy, self.translator_dir or shipped_translator(copy.name))
        return self._translator

    def profile(self):
        if self._profile is None:
            from soft2hard.interpret.selection import Profile, find_profile

            self._profile = Profile.load(self.profile_path or find_profile(self.cache_dir, self.lm.name))
        return self._profile

    def soft_prompt_outputs(self, item: EvalTask, examples: tuple[Example, ...]) -> list[str]:
        """Greedy outputs of the source model given the soft prompt and the task's own template."""
        task, lm = item.task, self.lm
        golds = list(task.labels) if task.labels else [ex.target for ex in examples]
        budget = max(len(lm.encode(task.format_target(g), special=False)) for g in golds) + 4
        prompt = item.prompt.to(lm.device)
        outputs: list[str] = []
        for i in range(0, len(examples), 16):
            chunk = examples[i:i + 16]
            outputs += lm.generate(prompt, [task.format_input(ex.input) for ex in chunk], max_new_tokens=budget,
                                   stop=STOP)
        return [answer_line(o) for o in outputs]

    def text(self, item: EvalTask, condition: str, optimizers: dict[str, dict], out: Path) -> dict:
        """One interpretation of the item's soft prompt (or the reference), as ``{"text": ..., details}``.

        ``optimizers``: settings of the optimized conditions (pez, rlprompt), whose runs go to ``out/<method>/``."""
        if condition == "reference":
            return {"text": item.reference}
        if condition in optimizers:
            return self._optimized(item, condition, optimizers[condition], out / condition)
        prompt = item.prompt.to(self.lm.device)
        if condition == "projection":
            from soft2hard.interpret.projection import project

            return {"text": project(self.lm, prompt).text}
        if condition == "inspect":
            from soft2hard.interpret.selection import describe_label_free

            d = describe_label_free(self.lm, prompt, self.profile(), k=1)[0]
            seen = seen_in_training(item.name, "inspect", self.profile().saw(item.name))
            return {"text": d.text, "layers": list(d.layers), **seen}
        if condition == "translator":
            from soft2hard.interpret.translator import KIND_CUE

            cue = KIND_CUE.get(item.dod_kind or "general", "instruction")  # an instruction unless told otherwise
            seen = seen_in_training(item.name, "translator", self.translator().saw(item.name))
            return {"text": self.translator().translate([prompt], cue=cue)[0].text, "cue": cue, **seen}
        raise ValueError(f"no text for condition {condition!r}")

    def _optimized(self, item: EvalTask, method: str, settings: dict, runs_dir: Path) -> dict:
        """A PEZ or RLPrompt prompt optimized on the source model (resumable, one run folder per task)."""
        from soft2hard.optimize import PezConfig, RLPromptConfig
        from soft2hard.optimize.sweep import run_one

        config = PezConfig if method == "pez" else RLPromptConfig
        cfg = config(seed=item.split_seed, **settings)  # the seed fixes the split: training sees the train split only
        result = run_one(self.lm, item.task, method, cfg, runs_dir / slug(item.name), resume=True,
                         progress=self.progress)
        return {"text": result["text"], "ids": result["ids"], "source_test_score": result["test_score"]}

    def text_metrics(self, item: EvalTask, text: str, examples: tuple[Example, ...]) -> dict:
        """Scrutability of ``text`` and, when there is a soft prompt, its faithfulness to it on ``examples``."""
        s = scrutability(self.lm, text)
        out = {"perplexity": s["perplexity"], "word_validity": s["word_validity"], "degenerate": s["degenerate"],
               "faithfulness": None, "faithfulness_kl": None}
        if item.prompt is not None and text.strip():
            f = faithfulness(self.lm, item.prompt.to(self.lm.device), text, item.task, examples)
            out["faithfulness"], out["faithfulness_kl"] = f["agreement"], f["mean_kl"]
        return out

    def inspect_grid(self, item: EvalTask, layers: list[int]) -> dict:
        """ROUGE-L against the reference of every (source, target) layer pair, for the report's heatmap."""
        from soft2hard.interpret.inspection import inspect_grid
        from soft2hard.metrics import rouge_l

        cfg = self.profile().config(source_layers=layers, target_layers=layers)
        descs = inspect_grid(self.lm, item.prompt.to(self.lm.device), cfg)
        scores = dict(zip([d.layers for d in descs], rouge_l([d.text for d in descs], [item.reference] * len(descs))))
        texts = {d.layers: d.text for d in descs}
        matrix = [[round(float(scores.get((s, t), float("nan"))), 4) for t in layers] for s in layers]
        best = max(scores, key=lambda p: (scores[p], -p[0], -p[1]))
        return {"layers": layers, "rouge_l": matrix, "best": list(best), "best_text": texts[best]}
