"""INT4 quantization of one weight without data: round to nearest, MSE-optimal clipping, or HQQ.

All three only choose each group's scale and zero point differently; the codes are then rounded
against the stored (float16) scale and packed in the one INT4 format. Rows are processed in chunks
so a large tensor never needs more than a few chunk-sized temporaries.
"""

from __future__ import annotations

import torch

from compress.finite import check_finite
from compress.formats.quantized import QuantizedTensor
from compress.passes.quantize.clipping import clip_search
from compress.passes.quantize.hqq import hqq_params
from compress.passes.quantize.rtn import as_matrix, int4_codes, int4_params, pack_int4_tensor
from compress.threads import on_one_thread

DATA_FREE_METHODS = ("rtn", "mse", "hqq")
CHUNK_ROWS = 2048


def group_params(groups: torch.Tensor, symmetric: bool, method: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point per group of a [rows, n_groups, group] tensor, by a data-free method."""
    if method == "rtn":
        return int4_params(groups, symmetric)
    if method == "mse":
        return clip_search(groups, symmetric)
    if method == "hqq":
        return hqq_params(groups, symmetric)
    raise ValueError(f"not a data-free method: {method}")


@on_one_thread
def quantize_int4_data_free(
    weight: torch.Tensor,
    group_size: int,
    symmetric: bool,
    method: str,
    *,
    name: str | None = None,
    allow_nonfinite: bool = False,
) -> QuantizedTensor:
    """NaN/Inf weights are refused with `name` (see compress.finite), or saturated with `allow_nonfinite`."""
    w2d = as_matrix(check_finite(name, weight, allow_nonfinite))
    rows, cols = w2d.shape
    codes, scales, zeros = [], [], []
    for start in range(0, rows, CHUNK_ROWS):
        groups = w2d[start : start + CHUNK_ROWS].reshape(-1, cols // group_size, group_size)
        scale, zero = group_params(groups, symmetric, method)
        codes.append(int4_codes(groups, scale, zero).reshape(-1, cols))
        scales.append(scale)
        zeros.append(zero)
    return pack_int4_tensor(
        torch.cat(codes),
        torch.cat(scales),
        torch.cat(zeros),
        tuple(weight.shape),
        weight.dtype,
        group_size,
        symmetric,
    )
