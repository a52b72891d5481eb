"""Other tools doing compress's work behind the same CLI, recipe and report (`--backend`).

A backend takes the float checkpoint and writes an output folder like compress's own (config and
tokenizer beside the weights, written atomically), but the weights are an ONNX graph the other tool
made: `model.onnx`, with compress's record of how it was made in the graph's metadata. Such a
folder loads as an ONNX-only model (see onnx_only.py) that the evaluator scores through ONNX Runtime.
"""

from __future__ import annotations

from typing import Any

from compress.errors import BadInput

BACKENDS = ("compress", "nncf")


def backend_pass(recipe: Any) -> Any | None:
    """The recipe's pass that another backend runs (None when compress runs them all).

    Such a pass writes an ONNX graph, which no later pass can read, and starts from the float
    checkpoint, so it must be the recipe's only pass.
    """
    handed = [cfg for cfg in recipe.passes if getattr(cfg, "backend", "compress") != "compress"]
    if not handed:
        return None
    if len(recipe.passes) > 1:
        cfg = handed[0]
        raise BadInput(
            f"{cfg.kind}.backend {cfg.backend}: runs as a recipe's only pass (it writes an ONNX graph "
            "from the float checkpoint); split the recipe or use backend compress."
        )
    return handed[0]
