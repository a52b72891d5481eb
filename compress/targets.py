"""Which layers a pass touches: layer types plus include/exclude glob patterns on layer names.

A pattern that matches nothing is an error, not a silent no-op: a typo in a target list would
otherwise leave a model uncompressed while the run reports success.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Literal

from compress.config import Settings
from compress.errors import BadInput

LayerType = Literal["linear", "embedding", "conv"]


@dataclass(frozen=True)
class Layer:
    """A candidate for a pass: the layer's name, its type (None when unknown) and its weight's name."""

    name: str
    type: str | None
    weight: str


@dataclass(frozen=True, kw_only=True)
class Targets(Settings):
    types: tuple[LayerType, ...] = ("linear",)
    include: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = ()

    def validate(self) -> None:
        if not self.types:
            raise BadInput("targets.types: give at least one layer type (linear, embedding, conv).")

    def select(self, layers: list[Layer], where: str) -> list[Layer]:
        """The layers these targets pick; BadInput when a pattern matches nothing or nothing is picked.

        Layers of unknown type (a bare checkpoint with no architecture) are kept whatever `types` says.
        """
        typed = [layer for layer in layers if layer.type is None or layer.type in self.types]
        for pattern in self.include:
            if pattern != "*" and not any(_match(layer, pattern) for layer in typed):
                raise BadInput(
                    f"{where}: target pattern '{pattern}' matches no {self._kinds()} layer; "
                    f"{_examples(typed)}."
                )
        for pattern in self.exclude:
            if not any(_match(layer, pattern) for layer in typed):
                raise BadInput(
                    f"{where}: exclude pattern '{pattern}' matches no {self._kinds()} layer; "
                    f"{_examples(typed)}."
                )
        chosen = [
            layer
            for layer in typed
            if any(_match(layer, p) for p in self.include) and not any(_match(layer, p) for p in self.exclude)
        ]
        if not chosen:
            raise BadInput(
                f"{where}: the targets select no layer ({self._kinds()} layers, include "
                f"{list(self.include)}, exclude {list(self.exclude)})."
            )
        return chosen

    def _kinds(self) -> str:
        return "/".join(self.types)


def _match(layer: Layer, pattern: str) -> bool:
    return fnmatch.fnmatchcase(layer.name, pattern) or fnmatch.fnmatchcase(layer.weight, pattern)


def matches(name: str, pattern: str) -> bool:
    """Whether a layer name (or its weight's name, `<layer>.weight`) matches a glob pattern."""
    layer = name.removesuffix(".weight")
    return _match(Layer(layer, None, f"{layer}.weight"), pattern)


def _examples(layers: list[Layer]) -> str:
    if not layers:
        return "the model has none"
    shown = ", ".join(layer.name for layer in layers[:4])
    return f"layers look like: {shown}" + (" ..." if len(layers) > 4 else "")
