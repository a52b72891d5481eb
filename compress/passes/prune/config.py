"""The prune pass's settings (one class for every pattern and method), validated on construction."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from compress.calibration import Calibration
from compress.config import PassConfig, suggest
from compress.errors import BadInput
from compress.targets import Targets

STRUCTURED = ("neurons", "heads", "channels")
PATTERNS = ("unstructured", "N:M", *STRUCTURED)
_NM = re.compile(r"^(\d+):(\d+)$")


@dataclass(frozen=True, kw_only=True)
class PruneConfig(PassConfig):
    """Pruning settings.

    pattern: unstructured | N:M (e.g. 2:4: N kept in every M consecutive weights of a row) |
             neurons (FFN) | heads (attention) | channels (convolutions).
    sparsity: fraction removed, in [0, 1); default 0.5, or 1 - N/M for an N:M pattern.
    method: magnitude (no data) | wanda (|W| x input norm; unstructured and N:M) |
            activation (input norm x weight norm of the coupled consumers; structured).
    scope: layer (every layer, or group of coupled layers, loses the same fraction) or global (one
           ranking across them: important layers keep more).
    round_to: structured only: the units kept per group are a multiple of this (kernels like 8, 16).
    recalibrate: structured only: re-estimate batch-norm statistics on the calibration data afterwards.
    targets: layer types and name globs; a structured group is pruned only if all its layers are targeted.
    calibration: this pass's calibration data (wanda, activation; structured patterns also trace the
        model on its first sample and re-estimate batch norms on it); None: the recipe's.
    """

    kind: ClassVar[str] = "prune"
    pattern: str = "unstructured"
    sparsity: float | None = None
    method: Literal["magnitude", "wanda", "activation"] = "magnitude"
    scope: Literal["layer", "global"] = "layer"
    round_to: int = 1
    recalibrate: bool = True
    targets: Targets = field(default_factory=lambda: Targets(types=("linear", "conv")))
    calibration: Calibration | None = None

    def validate(self) -> None:
        nm = self.n_m
        if nm is None and self.pattern not in PATTERNS:
            raise BadInput(
                f"prune.pattern: unknown value '{self.pattern}'{suggest(self.pattern, list(PATTERNS))}; "
                "valid: unstructured, N:M (e.g. 2:4), neurons, heads, channels."
            )
        if nm is not None and not 0 < nm[0] < nm[1]:
            raise BadInput(f"prune.pattern: '{self.pattern}' needs 0 < N < M (e.g. 2:4).")
        s = self.sparsity
        if s is not None and not 0 <= s < 1:
            raise BadInput(f"prune.sparsity: {s} is outside [0, 1) (the fraction of weights removed).")
        if nm is not None and s is not None and abs(s - (1 - nm[0] / nm[1])) > 1e-9:
            raise BadInput(
                f"prune.sparsity: pattern {self.pattern} removes {1 - nm[0] / nm[1]:.4g} of the weights; "
                f"{s} contradicts it (leave sparsity out)."
            )
        structured = self.pattern in STRUCTURED
        if structured and self.method == "wanda":
            raise BadInput(
                "prune.method: wanda scores single weights; for neurons, heads or channels use "
                "magnitude or activation."
            )
        if not structured and self.method == "activation":
            raise BadInput(
                "prune.method: activation scores whole neurons, heads or channels; for "
                f"{self.pattern} sparsity use magnitude or wanda."
            )
        if self.round_to < 1:
            raise BadInput(f"prune.round_to: {self.round_to} must be at least 1.")

    @property
    def n_m(self) -> tuple[int, int] | None:
        match = _NM.match(self.pattern)
        return (int(match[1]), int(match[2])) if match else None

    @property
    def fraction(self) -> float:
        """The fraction removed."""
        if self.n_m is not None:
            return 1 - self.n_m[0] / self.n_m[1]
        return 0.5 if self.sparsity is None else self.sparsity

    @property
    def structured(self) -> bool:
        return self.pattern in STRUCTURED

    def uses_data(self) -> bool:
        return self.method != "magnitude"

    def accepts_data(self) -> bool:
        return self.uses_data() or self.structured

    def describe(self) -> str:
        scope = f", {self.scope}" if self.n_m is None else ""
        return f"{self.pattern} {self.fraction:.0%}, {self.method}{scope}"
