"""Refusing NaN and infinite weights before they are quantized.

One infinite value makes its row's scale infinite, and every other code of the row rounds to zero;
a NaN spreads the same way. Such weights are refused with the tensor's name. Allowed explicitly, they
are saturated instead: NaN becomes 0 and +/-Inf the largest finite magnitude of its row, so the rest
of the row keeps its precision.
"""

from __future__ import annotations

import math

from compress.errors import BadInput, quoted


def check_finite(name: str | None, tensor, allow: bool = False):
    """`tensor` itself when every value is finite; BadInput naming it otherwise, or with `allow` a
    copy whose non-finite values are saturated (see the module docstring)."""
    import torch

    if not tensor.is_floating_point() or tensor.numel() == 0 or bool(torch.isfinite(tensor).all()):
        return tensor
    nan = int(torch.isnan(tensor).sum())
    inf = int(torch.isinf(tensor).sum())
    if not allow:
        first = torch.nonzero(~torch.isfinite(tensor))[0].tolist()
        what = f"weight {quoted(name)}" if name else f"a weight of shape {list(tensor.shape)}"
        counts = " and ".join(f"{n} {label}" for n, label in ((nan, "NaN"), (inf, "infinite")) if n)
        raise BadInput(
            f"quantize: {what} holds {counts} value{'s' if nan + inf > 1 else ''} (first at {first}), "
            "which would wipe out the rest of its row; fix the checkpoint, or allow them with "
            "--allow-nonfinite (NaN becomes 0, Inf the row's largest finite value)."
        )
    return _saturated(tensor)


def _saturated(tensor):
    import torch

    rows = tensor.shape[0] if tensor.dim() else 1
    w2d = tensor.detach().reshape(rows, math.prod(tensor.shape[1:]) if tensor.dim() else 1).float()
    finite = torch.isfinite(w2d)
    top = torch.where(finite, w2d.abs(), torch.zeros_like(w2d)).amax(dim=1, keepdim=True).expand_as(w2d)
    out = torch.where(torch.isnan(w2d), torch.zeros_like(w2d), w2d)
    out = torch.where(torch.isposinf(w2d), top, out)
    out = torch.where(torch.isneginf(w2d), -top, out)
    return out.reshape(tensor.shape).to(tensor.dtype)
