"""Clipping search: per group, the INT4 range that minimises the error, weighted by the data or not.

Round-to-nearest maps each group's largest magnitude to the edge of the code range. Clipping that
range (a ratio below 1) trades a large error on a few outliers for a finer step on every other
weight, and is often the better deal. The error of a (row, group) is

    d^T H_g d     with d = dequantized - original over the group's columns,

where H_g is the group's block of the input Gram matrix (sum of x x^T over calibration tokens), so
the search minimises the layer's output error on the calibration data (AWQ's clip search, exact
over every token). Without data, H_g = I: the MSE-optimal clipping of the weights themselves.
"""

from __future__ import annotations

import torch

from compress.passes.quantize.rtn import int4_codes, int4_params

# Clip ratios tried. Symmetric codes span -8..7 around the implicit zero, so a ratio of 7.5/7 maps
# the largest magnitude exactly onto +7 (no clipping at all) and is worth trying too.
SYMMETRIC_RATIOS = (7.5 / 7, *[1.0 - 0.025 * i for i in range(21)])
ASYMMETRIC_RATIOS = tuple(1.0 - 0.025 * i for i in range(21))


def clip_search(
    groups: torch.Tensor, symmetric: bool, gram: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point per group of a [rows, n_groups, group] tensor with the least error.

    `gram` is [n_groups, group, group] (each group's block of the input Gram matrix) or None.
    """
    groups = groups.to(torch.float32)
    best_err = best_scale = best_zero = None
    for ratio in SYMMETRIC_RATIOS if symmetric else ASYMMETRIC_RATIOS:
        scale, zero = int4_params(groups * ratio, symmetric)
        delta = dequantize_groups(int4_codes(groups, scale, zero), scale, zero) - groups
        err = group_error(delta, gram)
        if best_err is None:
            best_err, best_scale, best_zero = err, scale, zero
            continue
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_scale = torch.where(better, scale, best_scale)
        best_zero = torch.where(better, zero, best_zero)
    return best_scale, best_zero


def dequantize_groups(codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    return (codes.to(torch.float32) - zero[..., None]) * scale[..., None]


def group_error(delta: torch.Tensor, gram: torch.Tensor | None) -> torch.Tensor:
    """Per (row, group) error of a [rows, n_groups, group] difference: squared, or d^T H_g d."""
    if gram is None:
        return delta.pow(2).sum(dim=-1)
    weighted = torch.einsum("rgi,gij->rgj", delta, gram)
    return (weighted * delta).sum(dim=-1)


def gram_blocks(hessian: torch.Tensor, group_size: int) -> torch.Tensor:
    """The [n_groups, group, group] diagonal blocks of a [cols, cols] Gram matrix."""
    n = hessian.shape[0] // group_size
    blocks = hessian.reshape(n, group_size, n, group_size)
    return blocks[torch.arange(n), :, torch.arange(n), :]
