"""What every attack reports: accuracy before and after, and the curve or artefact it found."""

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class CurvePoint:
    """Evaluation at one step of an attack that proceeds in steps."""

    step: int
    accuracy: dict[str, float]
    loss: float | None = None


@dataclass
class AttackResult:
    """``before`` and ``after`` accuracy per evaluation set, plus the attack's own details."""

    attack: str
    before: dict[str, float]
    after: dict[str, float]
    curve: list[CurvePoint] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` layout."""
        return {
            "attack": self.attack,
            "before": self.before,
            "after": self.after,
            "curve": [asdict(point) for point in self.curve],
            **self.details,
        }
