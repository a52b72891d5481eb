"""Counting the FLOPs a model runs: 2 per multiply-add of its matrix products, convolutions and attention.

Counted at the ATen level while the model runs, so the count is what the dense kernels execute:
a pruned (smaller) layer counts less, a weight full of zeros counts the same, a weight-only
quantized layer counts as its float layer (it dequantizes and multiplies in float). Element-wise
operations, normalisations and softmax are not counted; they are a few percent of a transformer.
(torch.utils.flop_counter misses CPU attention kernels, hence this counter.)
"""

from __future__ import annotations

import math
from typing import Any


def _linear(p, out) -> int:
    x, w = p["input"], p["weight"]
    return 2 * (x.numel() // x.shape[-1]) * w.shape[0] * w.shape[1]


def _matmul(p, out) -> int:
    a = p.get("mat1", p.get("batch1", p.get("self")))
    return 2 * out.numel() * a.shape[-1]


def _conv(p, out) -> int:
    w = p["weight"]
    return 2 * out.numel() * math.prod(w.shape[1:])


def _attention(p, out) -> int:
    q, k, v = p["query"], p["key"], p["value"]
    rows = q.numel() // q.shape[-1]  # batch x heads x query positions
    return 2 * rows * k.shape[-2] * (q.shape[-1] + v.shape[-1])


COUNTERS = {
    "linear": _linear,
    **dict.fromkeys(("mm", "addmm", "bmm", "baddbmm", "matmul"), _matmul),
    # compress.kernels' integer matrix products: the same multiply-adds as the float one
    **dict.fromkeys(
        ("_int_mm", "_weight_int8pack_mm", "_weight_int4pack_mm", "_weight_int4pack_mm_for_cpu"), _matmul
    ),
    **dict.fromkeys(("conv1d", "conv2d", "conv3d", "convolution", "_convolution"), _conv),
    **dict.fromkeys(
        (
            "scaled_dot_product_attention",
            "_scaled_dot_product_flash_attention_for_cpu",
            "_scaled_dot_product_attention_math",
            "_scaled_dot_product_efficient_attention",
            "_scaled_dot_product_flash_attention",
        ),
        _attention,
    ),
}


def count_flops(module, inputs: Any) -> int:
    """FLOPs of one call of `module` on `inputs` (a dict, tuple or tensor)."""
    import torch

    from compress.dispatch import bind_arguments, watching
    from compress.eval.calls import call_module

    total = 0

    def count(func, args, kwargs, out) -> None:
        nonlocal total
        counter = COUNTERS.get(func.overloadpacket.__name__)
        if counter is not None:
            first = out[0] if isinstance(out, tuple | list) else out
            total += counter(bind_arguments(func, args, kwargs), first)

    with torch.inference_mode(), watching(count):
        call_module(module, inputs)
    return total
