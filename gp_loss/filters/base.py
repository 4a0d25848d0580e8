"""The verdict of one filter stage on one candidate."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class StageResult:
    """``passed`` with a human ``reason`` and the ``numbers`` behind the verdict."""

    stage: str
    passed: bool
    reason: str = ""
    numbers: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)
