"""What every accuracy task shares: its result, the retention ratio, its options, and the linear probe.

retention = candidate / baseline for higher-is-better metrics (baseline / candidate otherwise).
The tasks themselves live in compress.eval.tasks (text) and compress.eval.classify / embedding.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from compress.config import Settings
from compress.errors import BadInput

if TYPE_CHECKING:
    from compress.model import Model


@dataclass
class AccuracyResult:
    status: str  # "ok" | "unavailable"
    task: str | None = None
    metric: str | None = None
    value: float | None = None
    baseline: float | None = None
    retention: float | None = None
    higher_is_better: bool = True
    details: dict = field(default_factory=dict)
    reason: str | None = None

    @classmethod
    def unavailable(cls, reason: str, task: str | None = None) -> AccuracyResult:
        return cls(status="unavailable", task=task, reason=reason)


def retention(value: float, baseline: float, higher_is_better: bool) -> float | None:
    if higher_is_better:
        return value / baseline if baseline else None
    return baseline / value if value else None


class Task(ABC):
    name: str
    metric: str
    higher_is_better: bool = True

    @abstractmethod
    def run(self, baseline: Model, candidate: Model, progress=None) -> AccuracyResult: ...

    def result(self, value: float, baseline: float, details: dict) -> AccuracyResult:
        return AccuracyResult(
            status="ok",
            task=self.name,
            metric=self.metric,
            value=value,
            baseline=baseline,
            retention=retention(value, baseline, self.higher_is_better),
            higher_is_better=self.higher_is_better,
            details=details,
        )


def fit_probe(features, labels: list[int], num_classes: int, ridge: float = 1e-2):
    """Deterministic linear probe: one-vs-rest ridge regression, solved in closed form."""
    import torch

    x = torch.cat([features.double(), torch.ones(len(features), 1, dtype=torch.float64)], dim=1)
    y = torch.full((len(labels), num_classes), -1.0, dtype=torch.float64)
    y[torch.arange(len(labels)), torch.tensor(labels)] = 1.0
    gram = x.T @ x + ridge * torch.eye(x.shape[1], dtype=torch.float64)
    return torch.linalg.solve(gram, x.T @ y)


def predict(weights, features) -> list[int]:
    import torch

    x = torch.cat([features.double(), torch.ones(len(features), 1, dtype=torch.float64)], dim=1)
    return (x @ weights).argmax(dim=1).tolist()


def accuracy_and_f1(predicted: list[int], truth: list[int], num_classes: int) -> tuple[float, float]:
    correct = sum(p == t for p, t in zip(predicted, truth, strict=True))
    f1s = []
    for c in range(num_classes):
        tp = sum(p == c and t == c for p, t in zip(predicted, truth, strict=True))
        fp = sum(p == c and t != c for p, t in zip(predicted, truth, strict=True))
        fn = sum(p != c and t == c for p, t in zip(predicted, truth, strict=True))
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0)
    return correct / len(truth), sum(f1s) / num_classes


@dataclass(frozen=True, kw_only=True)
class TaskOptions(Settings):
    """Settings of the accuracy tasks; each task reads the ones it needs."""

    kind: ClassVar[str] = "task options"
    max_length: int | None = None  # tokens per text (classification, embedding, fidelity); None: the model's
    batch_size: int = 32
    text_column: str = "text"
    label_column: str = "label"
    window: int = 512  # causal-lm: tokens per window
    stride: int | None = None  # causal-lm: tokens the window advances (default: the window)
    max_tokens: int = 8192  # causal-lm: tokens of the text scored, at most

    def validate(self) -> None:
        for name in ("max_length", "batch_size", "window", "max_tokens"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise BadInput(f"task options: {name} must be at least 1, got {getattr(self, name)}.")
