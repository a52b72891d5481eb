"""ONNX graphs of 16-bit models: float16 graphs yes, bfloat16 graphs no.

An fp16 checkpoint exports as it computes: MatMuls and Gathers on its float16 weights, Casts to
float32 around its float32 islands (norms; compress.precision). ONNX Runtime runs that graph on CPU
as well as CUDA, so the export is checked on CPU; on CPU its float16 kernels were no faster than
float32 (MiniLM batch 8 x 128: 0.92x, benchmarks/results/bf16.md), so the graph is for CUDA.

A bf16 checkpoint has no ONNX form that anything here can run: torch's TorchScript exporter stops
on bfloat16 ("ScalarType ComplexDouble is an unexpected tensor scalar type", torch 2.13) and
ONNX Runtime 1.32's CPU provider has no bfloat16 MatMul, Add or Softmax (NOT_IMPLEMENTED).
"""

from __future__ import annotations

from compress.errors import Unavailable

BF16_REASON = (
    "a bf16 model has no ONNX Runtime form: torch's ONNX exporter cannot write bfloat16 graphs and "
    "ONNX Runtime's CPU provider has no bfloat16 MatMul or Add kernels; time it on torch (or OpenVINO "
    "with bf16 inference precision), or use scheme fp16 for an ONNX graph"
)
MIN_COSINE_FP16 = 0.999  # ONNX Runtime's float16 kernels round differently from torch's (measured 1e-5)


def graph_check_cosine(module) -> float | None:
    """The cosine an ONNX graph of `module` must reach against torch (None: the float tolerance);
    Unavailable for a bf16 model."""
    import torch

    from compress.precision import compute_dtype

    dtype = compute_dtype(module)
    if dtype == torch.bfloat16:
        raise Unavailable(BF16_REASON)
    return MIN_COSINE_FP16 if dtype == torch.float16 else None
