"""The learned soft-to-hard translator (Kongsomjit et al. 2026; METHODS.md §4).

The translator is the source model itself with LoRA adapters (PEFT). A soft prompt's vectors are its input
prefix, followed by a short cue ("Instruction:" for a general task, "Labels:" for a classifier); it is trained
with next-token cross-entropy to emit the task's reference text and EOS, and decodes greedily.

Rows carry different soft prompts, so there is no shared prefix cache here: each row is
``[prompt_i][cue][reference]`` embedded and right-padded, and the LM head runs only at the reference positions.
Training (examples, validation, the loop) is in :mod:`soft2hard.interpret.translator_training`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from soft2hard import atomic
from soft2hard.dod.manifest import TASK_KINDS
from soft2hard.errors import Soft2HardError
from soft2hard.interpret.base import Description
from soft2hard.lm import LanguageModel
from soft2hard.training import (
    check_choice,
    check_ints,
    check_numbers,
    is_number,
)

logger = logging.getLogger(__name__)

CUES = {"instruction": "\nInstruction:", "labels": "\nLabels:"}
KIND_CUE = {"general": "instruction", "distilled": "instruction", "classification": "labels"}
TRANSLATOR_META = "translator.json"
SHIPPED_TRANSLATORS = Path(__file__).resolve().parents[1] / "data" / "translators"
STEP_KEY = "__step__"  # the LoRA weights all step together: one AdamW step count in optimizer.safetensors


@dataclass
class TranslatorConfig:
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.1
    target_modules: tuple[str, ...] = ()  # () = every Linear/Conv1D of a decoder block (lm.lora_target_modules())
    lr: float = 1e-3
    weight_decay: float = 0.1
    epochs: int = 8
    batch_size: int = 8
    warmup_steps: int = 20
    max_target_tokens: int = 64
    save_every: int = 50
    seed: int = 0
    prompts: str = "all"  # all: every checkpoint of every run | best: each run's best checkpoint
    references: str = "all"  # all: each epoch a task's next paraphrase is the target | first: its reference only
    validation_tasks: int = 0  # training tasks (whole groups, per kind) set aside to choose the checkpoint
    eval_every: int = 0  # steps between validation passes (0: once per epoch)
    patience: int = 0  # stop after this many validation passes without a better loss (0: never stop early)
    max_train_tasks: int = 0  # train on a seeded subset of this many tasks (0: all; nested across sizes)
    validation_metric: str = "loss"  # loss: mean target loss (lower) | quality: decoded ROUGE-L / class rate (higher)
    max_tasks_per_family: int = 0  # keep a seeded subset of at most this many training tasks per family (0: all)
    cap_kinds: str = ""  # the kinds max_tasks_per_family applies to, e.g. "general" (empty: every kind)
    repeat: str = ""  # "bigbench=3,ni=3": each example of these families appears that many times per epoch

    def __post_init__(self) -> None:
        check_ints(self, "lora_r", "lora_alpha", "epochs", "batch_size", "save_every", "max_target_tokens")
        check_ints(self, "warmup_steps", "validation_tasks", "eval_every", "patience", "max_train_tasks",
                   "max_tasks_per_family", minimum=0)
        parse_repeat(self.repeat)
        unknown_kinds = [k for k in self.cap_kinds.split(",") if k and k not in TASK_KINDS]
        if unknown_kinds:
            raise Soft2HardError(f"cap_kinds: {', '.join(unknown_kinds)} is not a task kind "
                                 f"({', '.join(TASK_KINDS)})")
        check_ints(self, "seed", minimum=None)
        check_numbers(self, "lr")
        check_numbers(self, "weight_decay", positive=False)
        if not (is_number(self.lora_dropout) and 0 <= self.lora_dropout < 1):
            raise Soft2HardError(f"lora_dropout must be a number in [0, 1), got {self.lora_dropout!r}")
        check_choice(self, "prompts", ("all", "best"))
        check_choice(self, "references", ("all", "first"))
        check_choice(self, "validation_metric", ("loss", "quality"))
        self.target_modules = tuple(self.target_modules)


def parse_repeat(spec: str) -> dict[str, int]:
    """``"bigbench=3,ni=2"`` -> ``{"bigbench": 3, "ni": 2}`` (family -> copies per epoch, each >= 1)."""
    out: dict[str, int] = {}
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        family, _, count = part.partition("=")
        if not family.strip() or not count.strip().isdigit() or int(count) < 1:
            raise Soft2HardError(f"repeat: expected FAMILY=COUNT with COUNT >= 1 (e.g. bigbench=3), got {part!r}")
        out[family.strip()] = int(count)
    return out


@dataclass(frozen=True)
class TranslationExample:
    prompt: torch.Tensor  # (n, D)
    cue: str  # a key of CUES
    reference: str
    task: str
    paraphrases: tuple[str, ...] = ()  # other texts that state the same task (multi-reference training)

    @property
    def texts(self) -> tuple[str, ...]:
        return (self.reference, *(t for t in self.paraphrases if t != self.reference))

    def target(self, epoch: int, index: int) -> str:
        """The text trained on in ``epoch``: paraphrases take turns, offset by the example's index."""
        texts = self.texts
        return texts[(epoch + index) % len(texts)]


def _rows(lm: LanguageModel, prompts: list[torch.Tensor], cues: list[str], targets: list[list[int]] | None,
          left_pad: bool) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Embed ``[prompt][cue][target]`` rows; returns (embeds (B,T,D), mask (B,T), start of each target)."""
    dtype = lm.weight_dtype
    seqs, starts = [], []
    for i, (p, cue) in enumerate(zip(prompts, cues)):
        ids = lm.encode(CUES[cue], special=False) + (targets[i] if targets is not None else [])
        text = lm.embed(torch.tensor(ids, dtype=torch.long, device=lm.device))
        seqs.append(torch.cat([p.to(device=lm.device, dtype=dtype), text.to(dtype)]))
        starts.append(p.shape[0] + len(lm.encode(CUES[cue], special=False)))
    T = max(s.shape[0] for s in seqs)
    D = seqs[0].shape[1]
    embeds = torch.zeros(len(seqs), T, D, dtype=dtype, device=lm.device)
    mask = torch.zeros(len(seqs), T, dtype=torch.long, device=lm.device)
    for b, s in enumerate(seqs):
        offset = T - s.shape[0] if left_pad else 0
        embeds[b, offset:offset + s.shape[0]] = s
        mask[b, offset:offset + s.shape[0]] = 1
        starts[b] += offset
    return embeds, mask, starts


def target_ids(lm: LanguageModel, reference: str, max_tokens: int) -> list[int]:
    return lm.encode(" " + reference.strip(), special=False)[: max_tokens - 1] + [lm.tokenizer.eos_token_id]


def batch_loss(lm: LanguageModel, batch: list[TranslationExample], cfg: TranslatorConfig,
               texts: list[str] | None = None) -> torch.Tensor:
    """Mean cross-entropy of the target tokens (and EOS) given prompt + cue; targets are ``texts`` (one per
    example), by default each example's reference."""
    texts = texts if texts is not None else [ex.reference for ex in batch]
    targets = [target_ids(lm, text, cfg.max_target_tokens) for text in texts]
    embeds, mask, starts = _rows(lm, [ex.prompt for ex in batch], [ex.cue for ex in batch], targets, False)
    hidden = lm.forward_embeds(embeds, mask).last_hidden_state
    rows, cols, labels = [], [], []
    for b, (ids, s) in enumerate(zip(targets, starts)):
        rows += [b] * len(ids)
        cols += [s + j - 1 for j in range(len(ids))]
        labels += ids
    logits = lm.logits_from_hidden(hidden[torch.tensor(rows), torch.tensor(cols)])
    return F.cross_entropy(logits, torch.tensor(labels, device=logits.device))


@torch.no_grad()
def translate_batch(lm: LanguageModel, prompts: list[torch.Tensor], cue: str = "instruction",
                    max_new_tokens: int = 64, batch_size: int = 16) -> list[str]:
    """Greedy translations of soft prompts (LoRA must already be on ``lm``)."""
    if cue not in CUES:
        raise Soft2HardError(f"unknown cue {cue!r}; choose from {', '.join(CUES)}")
    texts: list[str] = []
    for i in range(0, len(prompts), batch_size):
        chunk = prompts[i:i + batch_size]
        embeds, mask, _ = _rows(lm, chunk, [cue] * len(chunk), None, left_pad=True)
        out = lm.forward_embeds(embeds, mask, use_cache=True)
        texts += [t.strip() for t in lm.greedy_continue(out, mask, max_new_tokens, ("\n",))]
    return texts


@dataclass
class Translator:
    """A source model with translator LoRA weights applied."""

    lm: LanguageModel
    meta: dict = field(default_factory=dict)

    @property
    def training_tasks(self) -> list[str] | None:
        """The tasks whose prompts it was trained on (None: not recorded, a translator from before the field)."""
        tasks = self.meta.get("training_tasks")
        return list(tasks) if isinstance(tasks, list) else None

    def saw(self, task: str) -> bool:
        """Whether ``task``'s prompts were in its training set: a score on that task is not a held-out score."""
        return task in (self.training_tasks or ())

    def translate(self, prompts: list[torch.Tensor], cue: str = "instruction", max_new_tokens: int = 64
                  ) -> list[Description]:
        d_model = self.meta.get("d_model")
        for p in prompts:
            if d_model and p.shape[-1] != d_model:
                raise Soft2HardError(f"the prompt has width {p.shape[-1]} but this translator reads {d_model}-wide "
                                     f"prompts of {self.meta.get('model')}; use a translator trained for its model")
        texts = translate_batch(self.lm, prompts, cue, max_new_tokens)
        return [Description(text=t, method="translator", details={"cue": cue}) for t in texts]


    def candidates(self, prompt: torch.Tensor, n: int = 8, seed: int = 0,
                   cues: tuple[str, ...] = ("instruction", "labels"), max_new_tokens: int = 64,
                   beams: int = 2) -> list[tuple[str, str]]:
        """Up to ``n`` (text, origin) candidates for one prompt: the greedy text for each cue, then the ``beams``
        best of a 4-beam search and seeded samples (temperature 0.8, top-p 0.95), both with the instruction cue.
        The same seed gives the same candidates."""
        out = [(self.translate([prompt], cue, max_new_tokens)[0].text, f"translator:greedy:{cue}")
               for cue in cues][:n]
        rest = n - len(out)
        embeds, mask, _ = _rows(self.lm, [prompt], ["instruction"], None, left_pad=True)
        if rest > 0 and beams > 0:
            k = min(rest, beams)
            texts = self.lm.generate_embeds(embeds, mask, max_new_tokens, num_beams=max(4, k), num_return_sequences=k)
            out += [(t.strip(), f"translator:beam:{i}") for i, t in enumerate(texts)]
            rest -= k
        if rest > 0:
            texts = self.lm.generate_embeds(embeds, mask, max_new_tokens, num_return_sequences=rest, sample=True,
                                            temperature=0.8, top_p=0.95, seed=seed)
            out += [(t.strip(), f"translator:sample:{i}") for i, t in enumerate(texts)]
        return out


def apply_lora(lm: LanguageModel, cfg: TranslatorConfig):
    from peft import LoraConfig, get_peft_model
    from transformers.pytorch_utils import Conv1D

    targets = list(cfg.target_modules) or lm.lora_target_modules()  # the model's own attention + MLP layers
    conv1d = any(isinstance(m, Conv1D) for name, m in lm.model.named_modules() if name.rpartition(".")[2] in targets)
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=targets, bias="none", task_type="CAUSAL_LM",
                      fan_in_fan_out=conv1d)  # GPT-2's Conv1D stores weights as (in, out)
    torch.manual_seed(cfg.seed)
    peft_model = get_peft_model(lm.model, lora)  # injects LoRA layers into lm.model in place
    return peft_model


def _save_adapter(peft_model, path: Path, model_name: str, dtype: torch.dtype | None = None) -> None:
    from peft import get_peft_model_state_dict

    with atomic.directory(path) as tmp:
        peft_model.peft_config["default"].base_model_name_or_path = model_name
        peft_model.peft_config["default"].save_pretrained(str(tmp))
        config = atomic.read_json(tmp / "adapter_config.json")
        if isinstance(config.get("target_modules"), list):  # PEFT keeps a set: its order follows the hash seed
            config["target_modules"] = sorted(config["target_modules"])
            atomic.write_json(tmp / "adapter_config.json", config)
        state = get_peft_model_state_dict(peft_model, save_embedding_layers=False)  # LoRA only
        atomic.save_tensors(tmp / "adapter_model.safetensors",
                            {k: v.to(dtype) if dtype else v for k, v in state.items()}, {"format": "pt"})


def _load_adapter_weights(peft_model, path: Path) -> None:
    from peft import set_peft_model_state_dict

    weights = path / "adapter_model.safetensors"
    if not weights.is_file():
        raise Soft2HardError(f"{path}: no adapter_model.safetensors (not a translator LoRA adapter)")
    try:
        state = load_file(str(weights))
    except Exception as err:  # safetensors raises several types for a corrupt file
        raise Soft2HardError(f"{weights}: not a valid safetensors file ({type(err).__name__})") from None
    result = set_peft_model_state_dict(peft_model, state)
    if getattr(result, "unexpected_keys", None):
        raise Soft2HardError(f"{weights}: LoRA weights do not fit this model ({result.unexpected_keys[0]})")


def load_translator(lm: LanguageModel, path: Path) -> Translator:
    """Apply the translator LoRA adapter in ``path`` to ``lm`` (which must be the translator's source model)."""
    path = Path(path)
    meta_path = path / TRANSLATOR_META
    if not meta_path.is_file():
        raise Soft2HardError(f"{path}: not a soft2hard translator (no {TRANSLATOR_META}); train one with "
                             "'soft2hard translator train'")
    meta = atomic.read_json(meta_path)
    try:
        cfg = TranslatorConfig(**meta["config"])
    except (KeyError, TypeError) as err:
        raise Soft2HardError(f"{meta_path}: invalid translator metadata ({err})") from None
    if meta.get("d_model") != lm.d_model:
        raise Soft2HardError(f"{path} was trained on {meta.get('model')} (width {meta.get('d_model')}); the loaded "
                             f"model {lm.name} has width {lm.d_model}")
    peft_model = apply_lora(lm, cfg)
    _load_adapter_weights(peft_model, path)
    peft_model.eval()
    # Inference only: fold B @ A into the base weights and drop the LoRA wrappers, so a decoding step costs what
    # the plain model's does (the per-layer LoRA matmuls and Python calls dominated small-batch decoding).
    peft_model.merge_and_unload()
    return Translator(lm=lm, meta=meta)


def shipped_translator(model: str) -> Path:
    path = SHIPPED_TRANSLATORS / model
    if not (path / TRANSLATOR_META).is_file():
        raise Soft2HardError(f"no shipped translator for {model!r}; pass --translator DIR (train one with "
                             "'soft2hard translator train')")
    return path
