"""HQQ-style data-free refinement of INT4 scales (after Badri & Shaji, "Half-Quadratic Quantization").

HQQ fits the quantization parameters to the weights under a sparsity-promoting l_p loss (p < 1),
so a few outlier weights may keep a large error while the bulk is fitted closely. It alternates a
shrinkage step (the outliers' share of the error, W_e) with a closed-form update of the parameters
against W - W_e, tightening the shrinkage as it goes.

The original updates a floating-point zero point; the stored format here (ONNX Runtime MatMulNBits)
has integer zero points, implicit (8) when symmetric, so this variant updates the scale by least
squares instead (and, asymmetric, the nearest integer zero point), keeping the iterate whose mean
absolute error is lowest.
"""

from __future__ import annotations

import torch

from compress.passes.quantize.clipping import dequantize_groups
from compress.passes.quantize.rtn import int4_codes, int4_params

ITERATIONS = 20
LP_NORM = 0.7
BETA = 10.0
KAPPA = 1.01


def hqq_params(groups: torch.Tensor, symmetric: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale (float16-representable) and zero point per group of a [rows, n_groups, group] tensor."""
    w = groups.to(torch.float32)
    scale, zero = int4_params(w, symmetric)
    best_scale, best_zero = scale, zero
    best_err = _mean_abs_error(w, scale, zero)
    beta = BETA
    for _ in range(ITERATIONS):
        codes = _codes(w, scale, zero)
        residual = w - dequantize_groups(codes, scale, zero)
        target = w - _shrink(residual, beta)
        centred = codes.to(torch.float32) - zero[..., None]
        if not symmetric:  # the integer zero point nearest the least-squares offset, then the scale
            offset = (codes.to(torch.float32) - target / scale.clamp(min=1e-12)[..., None]).mean(dim=-1)
            zero = torch.round(offset).clamp(0, 15)
            centred = codes.to(torch.float32) - zero[..., None]
        denominator = centred.pow(2).sum(dim=-1)
        fitted = (target * centred).sum(dim=-1) / denominator.clamp(min=1e-12)
        scale = torch.where(denominator > 0, fitted, scale).abs().to(torch.float16).to(torch.float32)
        err = _mean_abs_error(w, scale, zero)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_scale = torch.where(better, scale, best_scale)
        best_zero = torch.where(better, zero, best_zero)
        beta *= KAPPA
    return best_scale, best_zero


def _codes(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    return int4_codes(w, scale, zero)


def _shrink(x: torch.Tensor, beta: float) -> torch.Tensor:
    """The l_p shrinkage operator of HQQ: soft thresholding generalised to p < 1."""
    magnitude = x.abs()
    return torch.sign(x) * torch.relu(magnitude - magnitude.clamp(min=1e-8).pow(LP_NORM - 1) / beta)


def _mean_abs_error(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    return (dequantize_groups(_codes(w, scale, zero), scale, zero) - w).abs().mean(dim=-1)
