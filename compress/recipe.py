"""Recipe: an ordered list of passes (and, later, the evaluation and gate rules that go with them)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from compress.config import PassConfig
from compress.errors import BadInput
from compress.registry import config_from_dict

RECIPE_VERSION = 1


@dataclass
class Recipe:
    passes: list[PassConfig] = field(default_factory=list)
    version: int = RECIPE_VERSION

    @classmethod
    def of(cls, steps: Recipe | PassConfig | Iterable[PassConfig | dict[str, Any]]) -> Recipe:
        """Accept a Recipe, one pass's settings, or a list of settings or dicts."""
        if isinstance(steps, Recipe):
            return steps
        if isinstance(steps, PassConfig):
            return cls(passes=[steps])
        passes = []
        for i, step in enumerate(steps):
            if isinstance(step, PassConfig):
                passes.append(step)
            elif isinstance(step, dict):
                passes.append(config_from_dict(step, f"passes[{i}]"))
            else:
                raise BadInput(f"passes[{i}]: expected pass settings, got {type(step).__name__}.")
        return cls(passes=passes)

    def to_list(self) -> list[dict[str, Any]]:
        return [p.to_dict() for p in self.passes]
