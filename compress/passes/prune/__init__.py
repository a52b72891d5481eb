"""The `prune` pass: unstructured and N:M sparsity, and structured removal of neurons, heads, channels.

Unstructured and N:M pruning set weights to zero; the zeros are stored as a bitmask plus the kept
values, so the file shrinks (dense CPU kernels do not skip zeros, so it does not get faster).
Structured pruning removes whole neurons, attention heads or convolution channels, with the layers
coupled to them found by tracing the model (trace.py), so tensors physically shrink and the model
runs faster; the saved checkpoint loads back as a smaller model of the same architecture.
"""

from __future__ import annotations

from compress.passes.prune.config import PATTERNS, STRUCTURED, PruneConfig
from compress.registry import PassContext, PassResult, PassSpec

__all__ = ["PASS", "PATTERNS", "STRUCTURED", "PruneConfig"]


def apply(module, cfg: PruneConfig, ctx: PassContext) -> PassResult:
    if cfg.structured:
        from compress.passes.prune.structured import prune_structured

        return prune_structured(module, cfg, ctx)
    from compress.passes.prune.unstructured import prune_unstructured

    return prune_unstructured(module, cfg, ctx)


PASS = PassSpec(
    kind="prune",
    config=PruneConfig,
    apply=apply,
    summary="unstructured, N:M, or structured (neurons, heads, channels) pruning",
)
