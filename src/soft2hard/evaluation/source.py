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
    def answer_type(self) -> str:
        return self.task.answer_type

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
        self._lm, self._interpreters = lm, {}

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

    def interpreter(self, name: str):
        """The registry's interpreter ``name`` on the source model, made once (it loads what it needs itself)."""
        if name not in self._interpreters:
            from soft2hard.interpret.registry import InterpreterSettings, get_interpreter

            settings = InterpreterSettings(cache_dir=self.cache_dir, profile=self.profile_path,
                                           translator=self.translator_dir,
                                           load={"device": self.device, "dtype": self.dtype, "amp": self.amp})
            self._interpreters[name] = get_interpreter(name, self.lm, settings)
        return self._interpreters[name]

    def profile(self):
        return self.interpreter("inspect").profile

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

    def text(self, item: EvalTask, condition: str, settings: dict[str, dict], out: Path, inducer=None) -> dict:
        """One interpretation of the item's soft prompt (or the reference), as ``{"text": ..., details}``.

        ``settings``: per condition that has some (``EvalConfig.text_settings``); the optimizers' runs go to
        ``out/<method>/``. ``inducer``: the target that writes the induced instruction (default: the source
        model)."""
        if condition == "reference":
            return {"text": item.reference}
        if condition == "induced":
            return self._induced(item, inducer, **settings["induced"])
        if condition == "translator_selected":
            return self._selected(item, **settings["translator_selected"])
        if condition in ("pez", "rlprompt"):
            return self._optimized(item, condition, settings[condition], out / condition)
        from soft2hard.interpret.registry import LABEL_FREE
        from soft2hard.interpret.translator import KIND_CUE

        if condition not in LABEL_FREE:
            raise ValueError(f"no text for condition {condition!r}")
        cue = KIND_CUE.get(item.dod_kind or "general", "instruction")  # an instruction unless told otherwise
        interpreter = self.interpreter(condition)
        d = interpreter.describe(item.prompt.to(self.lm.device), cue=cue)[0]
        out = {"text": d.text}
        if d.layers:
            out["layers"] = list(d.layers)
        if condition == "translator":
            out["cue"] = cue
        return {**out, **seen_in_training(item.name, condition, interpreter.saw(item.name))}

    def _induced(self, item: EvalTask, inducer, examples: int, seed: int) -> dict:
        """Instruction induction from ``examples`` seeded training demonstrations (the inducer sees their
        labels, as a user writing a prompt from examples would; never a test example)."""
        from soft2hard.evaluation.conditions import few_shot_demos
        from soft2hard.interpret.induction import induce, source_completer

        demos = few_shot_demos(item.train(), examples, seed)
        if inducer is None:
            return {**induce(source_completer(self.lm), demos), "inducer": self.name}
        return {**induce(inducer.complete, demos), "inducer": inducer.name}

    def _selected(self, item: EvalTask, candidates: int, inputs: int) -> dict:
        """The translator candidate most faithful to the soft prompt on unlabelled validation inputs (the empty
        text when none beats it), with the ranking behind the choice."""
        from soft2hard.interpret.verify import select_translation, selection_inputs

        translator = self.interpreter("translator")
        prompt = item.prompt.to(self.lm.device)
        selection = selection_inputs(item.task, item.split_seed, inputs)
        verdict = select_translation(self.lm, translator.translator, prompt, item.task, selection, n=candidates,
                                     seed=item.split_seed)
        chosen = verdict.best if verdict.verified else verdict.empty
        return {"text": chosen.text, "selected": chosen.origin, "verified": verdict.verified,
                "verified_by": verdict.verified_by,
                "selection_agreement": chosen.agreement, "selection_kl": chosen.mean_kl,
                "selection_inputs": verdict.n_inputs, "seconds": round(verdict.seconds, 1),
                "ranked": [{"text": c.text, "origin": c.origin, "agreement": c.agreement, "mean_kl": c.mean_kl}
                           for c in [*verdict.ranked, verdict.empty]],
                **seen_in_training(item.name, "translator_selected", translator.saw(item.name))}

    def _optimized(self, item: EvalTask, method: str, settings: dict, runs_dir: Path) -> dict:
        """A PEZ or RLPrompt prompt optimized on the source model (resumable, one run folder per task)."""
        from soft2hard.optimize import get_optimizer, run_one

        cfg = get_optimizer(method).config(seed=item.split_seed, **settings)  # the seed fixes the split: training sees the train split only
        result = run_one(self.lm, item.task, method, cfg, runs_dir / slug(item.name), resume=True,
                         progress=self.progress)
        return {"text": result.text, "ids": result.ids, "source_test_score": result.test_score}

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
