"""GPTQ (Frantar et al., 2022): quantize a layer's columns one at a time and push each column's
rounding error onto the columns not yet quantized, weighted by the inverse Hessian of the layer's
output error, H = sum over calibration tokens of x x^T.

Details that matter:
- damping: `damp` x mean(diag H) is added to the diagonal so the inverse exists and stays stable;
- activation order: columns with the largest diag(H) (the busiest inputs) go first, while most
  columns can still absorb their error; the group scales are then fixed up front from the original
  weights ("static groups"), so groups stay contiguous in the stored format (no column index map);
- lazy batch updates: errors are applied to the rest of the matrix once per block of columns.
Group scales and zero points are chosen by the MSE clipping search when the group is reached
(`clip`), or by the plain range.
"""

from __future__ import annotations

import torch

from compress.errors import BadInput
from compress.passes.quantize.clipping import clip_search
from compress.passes.quantize.rtn import int4_params
from compress.threads import on_one_thread

BLOCK = 128


@on_one_thread
def gptq_int4(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    group_size: int,
    symmetric: bool,
    *,
    damp: float = 0.01,
    act_order: bool = True,
    clip: bool = True,
    name: str = "",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Codes [rows, cols] (uint8 in 0..15), scales and zero points [rows, cols / group_size]."""
    w = weight.to(torch.float32).clone()
    rows, cols = w.shape
    h = hessian.to(torch.float32).clone()
    dead = torch.diagonal(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    n_groups = cols // group_size
    scale = torch.zeros(rows, n_groups)
    zero = torch.zeros(rows, n_groups)

    def choose(group_weights: torch.Tensor, g: int) -> None:
        params = clip_search if clip else int4_params
        s, z = params(group_weights[:, None, :], symmetric)
        scale[:, g], zero[:, g] = s[:, 0], z[:, 0]

    order = torch.arange(cols)
    if act_order:
        for g in range(n_groups):
            choose(w[:, g * group_size : (g + 1) * group_size], g)
        order = torch.argsort(torch.diagonal(h), descending=True)
        w, h = w[:, order], h[order][:, order]
    u = _inverse_cholesky(h, damp, name)
    codes = torch.zeros(rows, cols, dtype=torch.uint8)
    block = max(BLOCK, group_size)
    for start in range(0, cols, block):
        end = min(start + block, cols)
        w_block = w[:, start:end].clone()
        err_block = torch.zeros_like(w_block)
        u_block = u[start:end, start:end]
        for i in range(end - start):
            column = int(order[start + i])
            g = column // group_size
            if not act_order and column % group_size == 0:
                choose(w_block[:, i : i + group_size], g)
            q = torch.clamp(torch.round(w_block[:, i] / _safe(scale[:, g])) + zero[:, g], 0, 15)
            codes[:, column] = q.to(torch.uint8)
            err = (w_block[:, i] - (q - zero[:, g]) * scale[:, g]) / u_block[i, i]
            w_block[:, i:] -= err[:, None] * u_block[i, i:][None, :]
            err_block[:, i] = err
        w[:, end:] -= err_block @ u[start:end, end:]
    return codes, scale, zero


def _safe(scale: torch.Tensor) -> torch.Tensor:
    return torch.where(scale > 0, scale, torch.ones_like(scale))


def _inverse_cholesky(h: torch.Tensor, damp: float, name: str) -> torch.Tensor:
    """Upper Cholesky factor of H^-1 after damping; more damping if H is too ill-conditioned."""
    mean_diag = torch.diagonal(h).mean()
    eye = torch.eye(h.shape[0])
    for attempt in range(4):
        damped = h + damp * (10**attempt) * mean_diag * eye
        lower, info = torch.linalg.cholesky_ex(damped)
        if info == 0:
            inverse = torch.cholesky_inverse(lower)
            upper, info = torch.linalg.cholesky_ex(inverse, upper=True)
            if info == 0:
                return upper
    raise BadInput(
        f"gptq: the Hessian of '{name}' is not positive definite even with damping {damp * 1000:g}; "
        "use more calibration samples or a larger damp."
    )
