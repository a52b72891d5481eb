"""`compress search`: the smallest or fastest model that keeps its accuracy, found across pruning,
distillation and quantization by Optuna's multi-objective sampler, each trial a recipe run through
the one runner on a Ray worker. Ray and Optuna are imported only when a search runs.

    import compress as cz
    result = cz.search("model.safetensors", "out/search", min_retention=0.99, trials=30)
    result.plot()                                   # the Pareto chart with the retention floor
    chosen = result.best(prefer="size")             # through the gate's rules
    result.save(chosen, "out/search/pick")          # the model, its report, a recipe with gate rules
"""

from __future__ import annotations

from typing import Any

__all__ = ["search"]


def __getattr__(name: str) -> Any:
    """`search` is imported when first used: importing the package stays cheap (the workers import
    compress.search.worker through it)."""
    if name == "search":
        from compress.search.driver import search

        return search
    raise AttributeError(f"module 'compress.search' has no attribute {name!r}")
