"""Unstructured and N:M pruning: zero the least important single weights.

Scores: magnitude |W|, or Wanda |W_ij| x ||X_j|| (the L2 norm of input feature j over the
calibration tokens), which keeps the weights that large activations flow through.
Selection: N:M keeps the N best of every M consecutive weights along a row's inputs; otherwise a
per-layer budget (magnitude: over the whole layer; Wanda: within each output row, as in the paper)
or one global ranking across all targeted layers.
"""

from __future__ import annotations

import math

from compress.errors import BadInput
from compress.passes.prune.config import PruneConfig
from compress.registry import PassContext, PassResult


def prune_unstructured(module, cfg: PruneConfig, ctx: PassContext) -> PassResult:
    import torch

    from compress.layers import select_module_layers
    from compress.qmodules import _QuantizedWeight
    from compress.statistics import input_norms, sample_list

    groups = select_module_layers(module, cfg.targets, "prune")
    layers = {names[0]: module.get_submodule(names[0]) for names in groups}
    for name, layer in layers.items():
        if isinstance(layer, _QuantizedWeight):
            raise BadInput(f"prune: layer '{name}' is quantized; prune first, then quantize.")
    if cfg.n_m is not None:
        check_n_m_fits(layers, cfg)
    norms = {}
    if cfg.method == "wanda":
        embeddings = [n for n, m in layers.items() if isinstance(m, torch.nn.Embedding)]
        if embeddings:
            raise BadInput(
                f"prune: wanda scores a layer by its input activations; embedding '{embeddings[0]}' has "
                "none (leave embeddings out, or use magnitude)."
            )
        norms = input_norms(module, list(layers), sample_list(ctx.data), ctx.progress)
    scores = {name: score(layer.weight.detach(), norms.get(name)) for name, layer in layers.items()}
    masks = select(scores, cfg)
    changes = {}
    with torch.no_grad():
        for names in groups:
            weight = layers[names[0]].weight
            mask = masks[names[0]]
            if not mask.any():
                raise BadInput(
                    f"prune: {cfg.describe()} would remove every weight of layer '{names[0]}' (the whole "
                    "layer); lower the sparsity, use scope 'layer', or exclude it."
                )
            weight.mul_(mask.to(weight.dtype))
            changes[f"{names[0]}.weight"] = {
                "pattern": cfg.pattern,
                "method": cfg.method,
                "scope": cfg.scope if cfg.n_m is None else None,
                "sparsity": 1 - mask.sum().item() / mask.numel(),
                "tied": names[1:],
            }
    total = sum(masks[n[0]].numel() for n in groups)
    kept = sum(int(masks[n[0]].sum()) for n in groups)
    return PassResult(module=module, changes=changes, stats={"prune.sparsity": 1 - kept / total})


def check_n_m_fits(layers: dict, cfg: PruneConfig) -> None:
    m = cfg.n_m[1]
    for name, layer in layers.items():
        cols = math.prod(layer.weight.shape[1:])
        if cols % m:
            raise BadInput(
                f"prune: pattern {cfg.pattern} needs rows whose length is a multiple of {m}; layer '{name}' "
                f"has rows of {cols} (shape {list(layer.weight.shape)}); exclude it or choose another M."
            )


def score(weight, norms):
    """|W|, or |W| x ||X|| with the input norm broadcast over a convolution's kernel positions."""
    s = weight.float().abs()
    if norms is None:
        return s
    shape = [1, -1] + [1] * (weight.dim() - 2)
    return s * norms.to(s.device).reshape(shape)


def select(scores: dict, cfg: PruneConfig) -> dict:
    """Boolean masks (True = kept) with the configured pattern, scope and sparsity."""
    if cfg.n_m is not None:
        return {name: n_m_mask(s, *cfg.n_m) for name, s in scores.items()}
    if cfg.scope == "global":
        return global_masks(scores, cfg.fraction)
    if cfg.method == "wanda":  # Wanda compares weights within each output row
        return {
            name: lowest_removed(s.reshape(s.shape[0], -1), cfg.fraction).reshape(s.shape)
            for name, s in scores.items()
        }
    return {
        name: lowest_removed(s.reshape(1, -1), cfg.fraction).reshape(s.shape) for name, s in scores.items()
    }


def lowest_removed(rows, fraction: float):
    """Mask of a [rows, n] score matrix with the round(fraction * n) lowest of every row removed."""
    import torch

    k = round(fraction * rows.shape[1])
    mask = torch.ones_like(rows, dtype=torch.bool)
    if k:
        mask.scatter_(1, rows.argsort(dim=1)[:, :k], False)
    return mask


def n_m_mask(s, n: int, m: int):
    import torch

    rows = s.reshape(s.shape[0], -1)
    blocks = rows.reshape(rows.shape[0], -1, m)
    mask = torch.zeros_like(blocks, dtype=torch.bool)
    mask.scatter_(2, blocks.topk(n, dim=2).indices, True)
    return mask.reshape(s.shape)


def global_masks(scores: dict, fraction: float) -> dict:
    """One threshold over every layer's scores, so the total removed is `fraction` of all weights."""
    import torch

    flat = torch.cat([s.reshape(-1) for s in scores.values()])
    k = round(fraction * flat.numel())
    if k == 0:
        return {name: torch.ones_like(s, dtype=torch.bool) for name, s in scores.items()}
    threshold = flat.kthvalue(k).values
    return {name: s > threshold for name, s in scores.items()}
