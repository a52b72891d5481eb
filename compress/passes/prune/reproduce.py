"""Checking that a structurally pruned model reproduces the masked original: the same outputs, within
float rounding, as the unpruned model with the removed units' input columns zeroed."""

from __future__ import annotations

import math

from compress.errors import Unsupported

TOLERANCE = 1e-4


def main_output_of(module, sample):
    from compress.eval.calls import call_module, main_output

    return main_output(call_module(module, sample)).float()


def check_reproduces(module, sample, reference) -> None:
    """The pruned model must give the masked original's outputs; else the analysis missed something."""
    import torch

    try:
        with torch.inference_mode():
            out = main_output_of(module, sample)
    except RuntimeError as exc:
        raise Unsupported(
            f"prune: the pruned {type(module).__name__} fails to run ({str(exc).splitlines()[0]}); its code "
            "computes a size from its configuration, which the dependency analysis cannot see."
        ) from None
    diff = relative_difference(out, reference)
    if diff > TOLERANCE:
        raise Unsupported(
            f"prune: the pruned {type(module).__name__} differs from the masked original (relative "
            f"difference {diff:.2e}); the dependency analysis missed a coupling in this architecture."
        )


def relative_difference(a, b) -> float:
    if a.shape != b.shape:
        return math.inf
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-6))
