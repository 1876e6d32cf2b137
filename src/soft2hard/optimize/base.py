"""What every prompt optimizer returns: the best hard prompt it found, with its scores (one shape for PEZ and
RLPrompt, stored as the run folder's ``result.json``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields


@dataclass
class OptimizedPrompt:
    """The best prompt of a run (by validation score) and how it does.

    ``weight`` is the method's interpretability weight (PEZ: fluency weight w; RLPrompt: perplexity penalty
    lambda, see :data:`soft2hard.optimize.METHODS`); ``metric`` names what ``validation_score`` and
    ``test_score`` measure; ``history`` holds one entry per validation (step, score, ids, text); ``extra`` the
    method's own fields (PEZ: losses; RLPrompt: top_k, training time, validations, config)."""

    method: str
    model: str
    task: str
    seed: int
    n_tokens: int
    steps: int
    weight: float
    ids: list[int]
    text: str
    best_step: int
    validation_score: float
    test_score: float
    metric: str
    perplexity: float
    word_validity: float
    degenerate: list[str]
    n_train: int
    n_validation: int
    n_test: int
    history: list[dict] = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """Flat: the common fields, then ``extra``'s."""
        d = asdict(self)
        return {**{k: v for k, v in d.items() if k != "extra"}, **d["extra"]}

    @classmethod
    def from_dict(cls, d: dict) -> OptimizedPrompt:
        names = {f.name for f in fields(cls)} - {"extra"}
        return cls(**{k: d[k] for k in names}, extra={k: v for k, v in d.items() if k not in names})
