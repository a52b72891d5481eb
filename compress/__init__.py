"""compress: make models smaller and faster, and prove it.

    import compress as cz
    model = cz.load("model.safetensors")
    int8 = cz.quantize(model, scheme="int8")
    report = cz.evaluate(int8, baseline=model)      # a table in a notebook
    sweep = cz.sweep(model, [cz.Quantize(scheme="int4", group_size=g) for g in (32, 64, 128)])
    sweep.plot()                                    # Pareto chart: retention against size and speed
    sweep.best(min_retention=0.99).save("out/")
    found = cz.search("model.safetensors", "out/search", trials=30)   # trials on Ray; found.best(...)

Every function here has an example in its docstring: help(cz.quantize), help(cz.sweep), ...

Importing compress is cheap: torch, transformers and onnx load only when a function needs them.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

from compress._version import __version__

_EXPORTS = {
    "load": "compress.model:load",
    "Model": "compress.model:Model",
    "apply": "compress.api:apply",
    "compress_checkpoint": "compress.api:compress_checkpoint",
    "quantize": "compress.api:quantize",
    "Quantize": "compress.passes.quantize.config:QuantizeConfig",
    "Calibration": "compress.calibration:Calibration",
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
    "run_recipe": "compress.api:run_recipe",
    "History": "compress.history:History",
    "sweep": "compress.sweep:sweep",
    "Sweep": "compress.sweep:Sweep",
    "search": "compress.search:search",  # the package resolves it lazily (Ray and Optuna load then)
}

__all__ = [
    "Artifact",
    "BadInput",
    "Calibration",
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
    "Sweep",
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
    "search",
    "sweep",
]


class _Package(types.ModuleType):
    """Keeps `compress.gate`, `compress.compare` and `compress.sweep` the functions of the API.

    Importing a submodule binds it on its package, so `import compress.gate` (which compress.recipe
    does) would otherwise turn `cz.gate` into the module. Submodules stay in sys.modules and
    `from compress.gate import Rule` works as usual.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and _EXPORTS.get(name, "").startswith(value.__name__ + ":"):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


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
    from compress.api import apply, compress_checkpoint, prune, quantize, run_recipe
    from compress.artifact import Artifact
    from compress.calibration import Calibration
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
    from compress.passes.quantize.config import QuantizeConfig as Quantize
    from compress.recipe import Recipe
    from compress.report import Report
    from compress.search.driver import search
    from compress.sweep import Sweep, sweep
    from compress.targets import Targets
