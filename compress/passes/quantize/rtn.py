"""Round-to-nearest quantization of one weight: scales from the weight alone, no data needed.

The scale and zero-point helpers are shared with the data-aware methods, which choose codes
differently but store them the same way.
"""

from __future__ import annotations

import math

import torch

from compress.finite import check_finite
from compress.formats.quantized import INT4_SYMMETRIC_ZERO, QuantizedTensor, pack_int4


def as_matrix(w: torch.Tensor) -> torch.Tensor:
    """View a weight as [rows, cols]: output channels by everything else."""
    return w.reshape(w.shape[0], math.prod(w.shape[1:])).to(torch.float32)


def int8_scale(w2d: torch.Tensor, qmax: int = 127) -> torch.Tensor:
    """Per-row symmetric scale so the largest magnitude maps to `qmax`."""
    if w2d.shape[1] == 0:  # rows of no columns: any scale decodes them
        return torch.ones(w2d.shape[0], dtype=torch.float32)
    return (w2d.abs().amax(dim=1) / qmax).clamp(min=torch.finfo(torch.float32).tiny)


def quantize_int8(
    w: torch.Tensor, bits: int = 8, *, name: str | None = None, allow_nonfinite: bool = False
) -> QuantizedTensor:
    """Symmetric per-row codes; bits=7 limits them to -63..63 (stored as int8 all the same).

    NaN/Inf weights are refused with `name` (see compress.finite), or saturated with `allow_nonfinite`.
    """
    qmax = 2 ** (bits - 1) - 1
    w2d = as_matrix(check_finite(name, w, allow_nonfinite))
    scale = int8_scale(w2d, qmax)
    q = torch.round(w2d / scale[:, None]).clamp_(-qmax, qmax).to(torch.int8)
    return QuantizedTensor("int8", q, scale, None, tuple(w.shape), w.dtype)


def int4_params(groups: torch.Tensor, symmetric: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale (as stored, float16) and zero point per group of a [rows, n_groups, group] tensor.

    Symmetric uses the codes -8..7 around an implicit zero of 8, with the largest magnitude at 7.5
    steps: a finer step than 7 for nearly all values, at the cost of rare clipping of one extreme.
    """
    if symmetric:
        scale = groups.abs().amax(dim=-1) / 7.5
        zero = torch.full_like(scale, INT4_SYMMETRIC_ZERO)
    else:
        lo = groups.amin(dim=-1).clamp(max=0)
        hi = groups.amax(dim=-1).clamp(min=0)
        scale = (hi - lo) / 15.0
        zero = torch.round(-lo / scale.clamp(min=1e-12)).clamp(0, 15)
    # Quantize against the scale exactly as stored, so decoding reproduces these codes' values.
    scale = scale.to(torch.float16).to(torch.float32)
    return scale, zero


def int4_codes(groups: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.round(groups / safe[..., None]) + zero[..., None]
    q = torch.where(scale[..., None] > 0, q, zero[..., None].expand_as(q))
    return q.clamp_(0, 15).to(torch.uint8)


def pack_int4_tensor(
    codes: torch.Tensor,
    scale: torch.Tensor,
    zero: torch.Tensor,
    shape: tuple[int, ...],
    dtype: torch.dtype,
    group_size: int,
    symmetric: bool,
) -> QuantizedTensor:
    """Store [rows, cols] codes with [rows, groups] scales and zeros in the INT4 format."""
    return QuantizedTensor(
        scheme="int4",
        data=pack_int4(codes),
        scale=scale.to(torch.float16),
        zero=None if symmetric else pack_int4(zero.to(torch.uint8)),
        shape=tuple(shape),
        dtype=dtype,
        group_size=group_size,
    )


def quantize_int4(
    w: torch.Tensor,
    group_size: int,
    symmetric: bool,
    *,
    name: str | None = None,
    allow_nonfinite: bool = False,
) -> QuantizedTensor:
    w2d = as_matrix(check_finite(name, w, allow_nonfinite))
    rows, cols = w2d.shape
    groups = w2d.reshape(rows, cols // group_size, group_size)
    scale, zero = int4_params(groups, symmetric)
    codes = int4_codes(groups, scale, zero).reshape(rows, cols)
    return pack_int4_tensor(codes, scale, zero, tuple(w.shape), w.dtype, group_size, symmetric)


def sqnr_db(reference: torch.Tensor, approx: torch.Tensor, chunk_rows: int = 4096) -> float:
    """Signal-to-quantization-noise ratio in dB (inf when exact), in row chunks to bound memory."""
    ref2d, approx2d = as_matrix(reference), as_matrix(approx)
    signal = noise = 0.0
    for start in range(0, ref2d.shape[0], chunk_rows):
        r = ref2d[start : start + chunk_rows].to(torch.float64)
        signal += r.pow(2).sum().item()
        noise += (r - approx2d[start : start + chunk_rows].to(torch.float64)).pow(2).sum().item()
    if noise == 0:
        return math.inf
    if signal == 0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)
