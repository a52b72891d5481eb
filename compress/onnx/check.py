"""Check a graph against the torch module it stands for, on samples of several shapes.

An export is refused when the runtime's output differs from torch's by more than
`atol + rtol * max|torch output|` (a faithful export differs by float rounding only), or, for a
graph built another way (integer kernels), when the cosine of the outputs falls below `min_cosine`.
Samples of another batch size and length than the export's catch shapes the tracer froze.
`check_export` runs an ONNX file in ONNX Runtime; `compare_outputs` takes any runtime as a function
of the named inputs (compress.openvino checks its compiled models with it).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compress.errors import Unsupported


@dataclass
class ExportCheck:
    max_abs_diff: float
    tolerance: float | None
    cosine_min: float
    shapes: list[list[int]] = field(default_factory=list)

    def describe(self) -> dict:
        return {
            "check_max_abs_diff": self.max_abs_diff,
            "check_tolerance": self.tolerance,
            "check_cosine_min": self.cosine_min,
            "check_shapes": self.shapes,
        }


def check_export(
    path: str | Path,
    module,
    samples: list[Any],
    *,
    atol: float = 1e-4,
    rtol: float = 1e-4,
    min_cosine: float | None = None,
    session=None,
) -> ExportCheck:
    """Run each sample through ONNX Runtime and torch; raise Unsupported with the numbers on a mismatch.

    With `min_cosine` set, agreement is judged by the cosine alone (for graphs that compute in
    integers and cannot match float torch to the last bit).
    """
    from compress.onnx.session import open_session, session_feeds

    session = session or open_session(path, "cpu")

    def run(named: dict[str, Any]):
        return session.run(None, session_feeds(session, named))[0]

    where = {"name": Path(path).name, "runtime": "ONNX Runtime"}
    return compare_outputs(run, module, samples, **where, atol=atol, rtol=rtol, min_cosine=min_cosine)


def compare_outputs(
    run: Callable[[dict[str, Any]], Any],
    module,
    samples: list[Any],
    *,
    name: str,
    runtime: str,
    atol: float = 1e-4,
    rtol: float = 1e-4,
    min_cosine: float | None = None,
) -> ExportCheck:
    """`run` (named input tensors -> the first output as a numpy array) against `module` on each
    sample; `name` and `runtime` word the refusal ('model.onnx', 'ONNX Runtime')."""
    import numpy as np
    import torch

    from compress.eval.calls import call_module, main_output
    from compress.kernels import stored_arithmetic
    from compress.onnx.export import named_inputs

    worst_diff, worst_cos, worst_tol, shapes = 0.0, 1.0, math.inf, []
    for sample in samples:
        named, _ = named_inputs(sample)
        with torch.inference_mode(), stored_arithmetic():
            expected = main_output(call_module(module, sample)).float()
        where = f"{name} on inputs of shape {list(next(iter(named.values())).shape)}"
        try:
            got = torch.from_numpy(np.array(run(named))).float()
        except Exception as exc:  # each runtime's own exception types; the export froze a shape
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise Unsupported(f"{where}: {runtime} cannot run the export ({first}).") from None
        if tuple(got.shape) != tuple(expected.shape):
            raise Unsupported(
                f"{where}: {runtime} gives shape {list(got.shape)}, torch {list(expected.shape)}; "
                "the export froze a shape."
            )
        real = _real_positions(named, expected)
        if real is not None:  # padding positions compute nothing anyone reads (a stateful LM's differ)
            got, expected = got[real], expected[real]
        diff = (got - expected).abs().max().item() if got.numel() else 0.0
        tolerance = atol + rtol * expected.abs().max().item() if expected.numel() else atol
        cos = torch.nn.functional.cosine_similarity(got.flatten(), expected.flatten(), dim=0).item()
        if not math.isfinite(diff) or (min_cosine is None and diff > tolerance):
            raise Unsupported(
                f"{where}: {runtime} differs from torch by up to {diff:.3g} (tolerance {tolerance:.3g}); "
                "the export is not faithful."
            )
        if min_cosine is not None and cos < min_cosine:
            raise Unsupported(
                f"{where}: {runtime} output has cosine {cos:.5f} to torch's (at least {min_cosine} needed)."
            )
        worst_diff, worst_cos = max(worst_diff, diff), min(worst_cos, cos)
        worst_tol = min(worst_tol, tolerance)
        shapes.append(list(next(iter(named.values())).shape))
    return ExportCheck(worst_diff, None if min_cosine is not None else worst_tol, worst_cos, shapes)


def _real_positions(named: dict[str, Any], output: Any) -> Any:
    """The attention mask as booleans when `output` is [batch, tokens, ...] like it, else None."""
    mask = named.get("attention_mask")
    if mask is None or tuple(output.shape[:2]) != tuple(mask.shape):
        return None
    return mask.bool()
