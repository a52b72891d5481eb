"""Passes registered for a test only: kinds the project does not ship yet (prune, distill) and a pass
that fails on request, to exercise recipe order checks and re-runs after a failed step."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import ClassVar

from compress import registry
from compress.config import PassConfig
from compress.errors import BadInput
from compress.registry import PassResult, PassSpec
from compress.targets import Targets

FAIL_ENV = "COMPRESS_TEST_FAIL_SCALE"


@dataclass(frozen=True, kw_only=True)
class PruneConfig(PassConfig):
    kind: ClassVar[str] = "prune"
    sparsity: float = 0.5


@dataclass(frozen=True, kw_only=True)
class DistillConfig(PassConfig):
    kind: ClassVar[str] = "distill"
    epochs: int = 1


@dataclass(frozen=True, kw_only=True)
class ScaleConfig(PassConfig):
    """Multiplies the targeted layers' biases (float even in quantized layers) by `factor`; fails while
    COMPRESS_TEST_FAIL_SCALE is set."""

    kind: ClassVar[str] = "scale"
    factor: float = 0.5
    targets: Targets = field(default_factory=Targets)


def _unused(module, cfg, ctx):
    raise AssertionError("only recipe validation uses this pass")


def _scale(module, cfg: ScaleConfig, ctx):
    import torch

    from compress.layers import select_module_layers

    if os.environ.get(FAIL_ENV):
        raise BadInput("scale: failing on purpose (test).")
    changes = {}
    with torch.no_grad():
        for names in select_module_layers(module, cfg.targets, "scale"):
            module.get_submodule(names[0]).bias.mul_(cfg.factor)
            changes[f"{names[0]}.bias"] = {"factor": cfg.factor}
    return PassResult(module=module, changes=changes)


PRUNE = PassSpec(kind="prune", config=PruneConfig, apply=_unused, summary="test prune")
DISTILL = PassSpec(kind="distill", config=DistillConfig, apply=_unused, summary="test distill")
SCALE = PassSpec(kind="scale", config=ScaleConfig, apply=_scale, summary="test scale")


def install(monkeypatch, *specs: PassSpec, broken: dict | None = None) -> None:
    """Make the registry see `specs` (and `broken` plug-ins) besides the installed passes."""
    found, really_broken = registry._discover()
    extra = {s.kind: s for s in specs}
    monkeypatch.setattr(
        registry, "_discover", lambda: ({**found, **extra}, {**really_broken, **(broken or {})})
    )
