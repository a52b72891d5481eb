"""compress: make models smaller and faster, and prove it.

    import compress as cz
    model = cz.load("model.safetensors")
    int8 = cz.quantize(model, scheme="int8")
    report = cz.evaluate(int8, baseline=model)

Importing compress is cheap: torch, transformers and onnx load only when a function needs them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from compress._version import __version__

_EXPORTS = {
    "load": "compress.model:load",
    "Model": "compress.model:Model",
    "apply": "compress.pipeline:apply",
    "compress_checkpoint": "compress.pipeline:compress_checkpoint",
    "quantize": "compress.api:quantize",
    "Quantize": "compress.passes.quantize:QuantizeConfig",
    "prune": "compress.api:prune",
    "Prune": "compress.passes.prune:PruneConfig",
    "distill": "compress.distillation:distill",
    "Distill": "compress.passes.distill:DistillConfig",
    "Targets": "compress.targets:Targets",
    "Recipe": "compress.recipe:Recipe",
    "Artifact": "compress.artifact:Artifact",
    "evaluate": "compress.eval:evaluate",
    "LatencySettings": "compress.eval.latency:LatencySettings",
    "Report": "compress.report:Report",
    "compare": "compress.compare:compare",
    "TaskOptions": "compress.eval.tasks:TaskOptions",
    "CompressError": "compress.errors:CompressError",
    "BadInput": "compress.errors:BadInput",
    "gate": "compress.gate:gate",
    "Rule": "compress.gate:Rule",
    "run_recipe": "compress.runner:run_recipe",
    "History": "compress.history:History",
}

__all__ = [
    "Artifact",
    "BadInput",
    "CompressError",
    "Distill",
    "History",
    "LatencySettings",
    "Model",
    "Prune",
    "Quantize",
    "Recipe",
    "Report",
    "Rule",
    "Targets",
    "TaskOptions",
    "__version__",
    "apply",
    "compare",
    "compress_checkpoint",
    "distill",
    "evaluate",
    "gate",
    "load",
    "prune",
    "quantize",
    "run_recipe",
]


def __getattr__(name: str) -> Any:
    target = _EXPORTS.get(name)
    if target is None:
        raise AttributeError(f"module 'compress' has no attribute {name!r}")
    module, attr = target.split(":")
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:
    from compress.api import prune, quantize
    from compress.artifact import Artifact
    from compress.compare import compare
    from compress.distillation import distill
    from compress.errors import BadInput, CompressError
    from compress.eval import evaluate
    from compress.eval.latency import LatencySettings
    from compress.eval.tasks import TaskOptions
    from compress.gate import Rule, gate
    from compress.history import History
    from compress.model import Model, load
    from compress.passes.distill import DistillConfig as Distill
    from compress.passes.prune import PruneConfig as Prune
    from compress.passes.quantize import QuantizeConfig as Quantize
    from compress.pipeline import apply, compress_checkpoint
    from compress.recipe import Recipe
    from compress.report import Report
    from compress.runner import run_recipe
    from compress.targets import Targets
