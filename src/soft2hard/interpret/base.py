"""What every interpreter returns: a Description (text + provenance)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class Description:
    """A text interpretation of a soft prompt.

    ``method`` is projection | inspect | translator | ...; ``layers`` is the InSPEcT (source, target) pair;
    ``oracle`` marks a description that was chosen by comparing against the reference (analysis only).
    """

    text: str
    method: str
    layers: tuple[int, int] | None = None
    score: float | None = None
    oracle: bool = False
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["layers"] = list(self.layers) if self.layers else None
        return d
