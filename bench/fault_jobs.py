"""The jobs of bench/faults.py: each long soft2hard command (``tune``, ``dod build``, ``translator train``,
``evaluate``) as a :class:`Job` (its arguments, its finished work, its comparison with a reference), and the tiny
random models they run on."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fault_checks import TIMING_FIELDS, _checkpoints, _read_json, same_json, same_tensors

ROOT = Path(os.path.dirname(os.path.abspath(__file__))).parent
JOBS = ("tune", "dod", "translator", "evaluate")
DOD_TASKS = "gen/plural,cat/fruit-animal,gen/first_letter"


# --- the jobs --------------------------------------------------------------------------------------------------

@dataclass
class Job:
    """A resumable soft2hard command. ``args(out, resume)`` is its argument list; ``progress(out)`` names the
    finished work in a folder (it must never shrink); ``compare(ref, run)`` lists differences from a reference."""

    name: str
    args: Callable[[Path, bool], list[str]]
    progress: Callable[[Path], set[str]]
    compare: Callable[[Path, Path], list[str]]
    settings: str = ""  # its size, for the report


def soft2hard_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


def command(job: Job, out: Path, resume: bool, cache_dir: Path) -> list[str]:
    return [sys.executable, "-m", "soft2hard.cli", "--cache-dir", str(cache_dir), *job.args(Path(out), resume)]


def tune_job(model: Path, steps: int = 40, eval_every: int = 5, task: str = "gen/plural") -> Job:
    def args(out, resume):
        return ["tune", "--model", str(model), "--task", task, "--tokens", "4", "--steps", str(steps),
                "--eval-every", str(eval_every), "--batch-size", "4", "--seed", "0", "--device", "cpu",
                "--out", str(out), "--quiet", *(["--resume"] if resume else [])]

    def progress(out):
        done = _checkpoints(out, "trainer_state.json")
        return done | ({"metrics.json"} if (out / "metrics.json").is_file() else set())

    def compare(ref, run):
        diffs = same_tensors(ref / "adapter_model.safetensors", run / "adapter_model.safetensors")
        diffs += same_json(ref / "metrics.json", run / "metrics.json", drop=TIMING_FIELDS)
        diffs += same_json(ref / "soft2hard.json", run / "soft2hard.json")
        ckpts = sorted(_checkpoints(ref, "trainer_state.json"))
        if ckpts != sorted(_checkpoints(run, "trainer_state.json")):
            diffs.append(f"{run}: checkpoints differ")
        for c in ckpts:
            diffs += same_tensors(ref / c / "prompt" / "adapter_model.safetensors",
                                  run / c / "prompt" / "adapter_model.safetensors")
        return diffs

    return Job("tune", args, progress, compare, f"{task}, {steps} steps, checkpoint every {eval_every}")


def dod_job(model: Path, tasks: str = DOD_TASKS, steps: int = 4, eval_every: int = 2) -> Job:
    def args(out, resume):  # a build resumes by running the same command again
        return ["dod", "build", "--out", str(out), "--model", str(model), "--tasks", tasks, "--workers", "0",
                "--general-heldout", "1", "--tokens", "4", "--steps", str(steps), "--eval-every", str(eval_every),
                "--batch-size", "4", "--max-test-examples", "4", "--amp", "none", "--quiet"]

    def progress(out):
        done = set()
        for run in Path(out).glob("runs/*/seed*"):
            done |= {f"{run.relative_to(out)}/{c}" for c in _checkpoints(run, "trainer_state.json")}
            if (run / "metrics.json").is_file():
                done.add(f"{run.relative_to(out)}/metrics.json")
        manifest = _read_json(out / "manifest.json", {}) or {}
        done |= {f"manifest:{p['id']}" for t in manifest.get("tasks", []) for p in t["prompts"]}
        return done

    def compare(ref, run):
        diffs = same_json(ref / "manifest.json", run / "manifest.json")
        diffs += same_json(ref / "plan.json", run / "plan.json")
        manifest = json.loads((ref / "manifest.json").read_text())
        for t in manifest["tasks"]:
            for p in t["prompts"]:
                diffs += same_tensors(ref / p["file"] / "adapter_model.safetensors",
                                      run / p["file"] / "adapter_model.safetensors")
        for metrics in sorted(Path(ref).glob("runs/*/seed*/metrics.json")):
            rel = metrics.relative_to(ref)
            diffs += same_json(metrics, run / rel, drop=TIMING_FIELDS)
            diffs += same_tensors(metrics.parent / "adapter_model.safetensors",
                                  run / rel.parent / "adapter_model.safetensors")
        return diffs

    return Job("dod", args, progress, compare, f"3 tasks, {steps} steps each, checkpoint every {eval_every}")


def translator_job(dod: Path, epochs: int = 2, save_every: int = 2) -> Job:
    def args(out, resume):
        return ["translator", "train", "--dod", str(dod), "--out", str(out), "--epochs", str(epochs),
                "--batch-size", "2", "--save-every", str(save_every), "--lora-r", "2", "--amp", "none",
                "--device", "cpu", "--quiet", *(["--resume"] if resume else [])]

    def progress(out):
        done = _checkpoints(out, "state.json")
        return done | ({"translator.json"} if (out / "translator.json").is_file() else set())

    def compare(ref, run):
        diffs = same_tensors(ref / "adapter_model.safetensors", run / "adapter_model.safetensors")
        # exact: the translator sorts target_modules (PEFT keeps a set, whose order follows the hash seed)
        diffs += same_json(ref / "adapter_config.json", run / "adapter_config.json")
        diffs += same_json(ref / "losses.json", run / "losses.json")
        # "dod" names the DoD folder, the same in both runs
        diffs += same_json(ref / "translator.json", run / "translator.json", drop=TIMING_FIELDS)
        return diffs

    return Job("translator", args, progress, compare, f"{epochs} epochs, batch 2, LoRA r 2, checkpoint every {save_every} steps")


EVAL_CONDITIONS = "soft_prompt,zero_shot,few_shot,reference,projection"


def evaluate_job(dod: Path, model: Path, target: Path, max_examples: int = 3) -> Job:
    def args(out, resume):  # an evaluation resumes by running the same command again
        return ["evaluate", "--dod", str(dod), "--tasks", "all", "--model", str(model), "--target", str(target),
                "--conditions", EVAL_CONDITIONS, "--max-examples", str(max_examples), "--device", "cpu",
                "--out", str(out), "--quiet"]

    def progress(out):
        rows = _read_json(out / "results.json", []) or []
        texts = _read_json(out / "texts.json", {}) or {}
        return ({f"row:{r['model']}|{r['task']}|{r['condition']}" for r in rows}
                | {f"text:{t}|{c}" for t, e in texts.items() for c in e.get("texts", {})})

    def sort_rows(rows):
        return sorted(rows, key=lambda r: (r["model"], r["task"], r["condition"]))

    def compare(ref, run):
        diffs = same_json(ref / "results.json", run / "results.json", transform=sort_rows)
        diffs += same_json(ref / "predictions.json", run / "predictions.json")
        diffs += same_json(ref / "texts.json", run / "texts.json")
        diffs += same_json(ref / "summary.json", run / "summary.json")
        return diffs

    return Job("evaluate", args, progress, compare, f"3 tasks x 5 conditions, {max_examples} examples")


# --- tiny models -----------------------------------------------------------------------------------------------

def make_tiny_models(root: Path, cache_dir: Path) -> tuple[Path, Path]:
    """A 2-block Llama and a 2-block Gemma3 with random weights and the SmolLM2 tokenizer (as tests/conftest.py
    builds them)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, Gemma3TextConfig, LlamaConfig
    from transformers.utils import logging as hf_logging

    from soft2hard.models import model_path

    hf_logging.disable_progress_bar()
    tok = AutoTokenizer.from_pretrained(model_path("smollm2-135m", cache_dir))
    special = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    llama = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                        tie_word_embeddings=True, **special)
    gemma = Gemma3TextConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=1, head_dim=16, max_position_embeddings=512,
                             sliding_window=16, layer_types=["sliding_attention", "full_attention"], **special)
    gemma.architectures = ["Gemma3ForCausalLM"]
    paths = []
    for name, config in (("tiny-llama", llama), ("tiny-gemma", gemma)):
        path = Path(root) / name
        if not (path / "config.json").exists():
            torch.manual_seed(0)
            AutoModelForCausalLM.from_config(config).save_pretrained(path)
            tok.save_pretrained(path)
        paths.append(path)
    return paths[0], paths[1]
