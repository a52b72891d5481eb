"""The float twin of a quantized module: what the integer ONNX export traces before its rewrite.

Each quantized Linear becomes a float Linear holding its dequantized weight (SmoothQuant factors
folded in), each quantized Embedding a float lookup of its dequantized table (scaled as the original
when the architecture scales its embeddings). The exported float graph then holds those matrices,
and compress.onnx.integer finds them by value and rewrites the operators that read them to run on the
stored integers.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from compress.errors import Unsupported


@dataclass
class Target:
    """A quantized Linear layer, as the graph rewrite needs it."""

    name: str  # the layer's weight name in the checkpoint
    qt: Any  # QuantizedTensor
    transposed: bool  # the graph holds W^T (MatMul) rather than W (Gemm with transB)
    smooth: Any = None  # numpy [in]: the input's SmoothQuant factors, or None
    input_scale: float | None = None  # static activations: the calibrated uint8 scale ...
    input_zero: int | None = None  # ... and zero point


@dataclass
class Table:
    """A quantized embedding table (looked up by a Gather)."""

    name: str
    qt: Any  # QuantizedTensor [vocabulary, dim]


@dataclass
class Twin:
    module: Any  # the float twin (torch.nn.Module)
    linears: dict[bytes, Target]  # float32 bytes of W and of W^T -> the layer
    tables: dict[bytes, Table]  # float32 bytes of a dequantized table -> the table

    def layer_names(self) -> set[str]:
        """Module names of the quantized layers (Linear and Embedding)."""
        targets = [*self.linears.values(), *self.tables.values()]
        return {t.name.removesuffix(".weight") for t in targets}


def float_embedding(sub):
    """A float module that looks up `sub`'s (a QuantEmbedding) dequantized rows as it does."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class FloatEmbedding(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(sub.qweight.dequantize(torch.float32), requires_grad=False)
            self.embed_scale = None if sub.embed_scale is None else sub.embed_scale.float().clone()

        def forward(self, ids):
            out = F.embedding(ids, self.weight)
            return out if self.embed_scale is None else out * self.embed_scale.to(out.dtype)

    return FloatEmbedding()


def float_twin(module) -> Twin:
    """A float32 copy of `module` with dequantized Linear weights and embedding tables, keyed by value."""
    import torch
    from torch import nn

    from compress.model import replace_module
    from compress.qmodules import QuantEmbedding, QuantLinear, _QuantizedWeight

    twin = copy.deepcopy(module).float().eval()
    keys: dict[bytes, Target] = {}
    tables: dict[bytes, Table] = {}
    for name, sub in list(twin.named_modules()):
        if not isinstance(sub, _QuantizedWeight):
            continue
        if isinstance(sub, QuantEmbedding):
            lookup = float_embedding(sub)
            replace_module(twin, name, lookup)
            tables[lookup.weight.detach().numpy().tobytes()] = Table(f"{name}.weight", sub.qweight)
            continue
        if not isinstance(sub, QuantLinear):
            raise Unsupported(
                f"ONNX integer export: layer '{name}' is a quantized {type(sub).__name__} (ONNX operator "
                "Conv); only Linear layers (MatMul/Gemm) and embeddings (Gather) have integer forms here. "
                "Exclude that layer."
            )
        qt = sub.qweight
        weight = qt.dequantize(torch.float32)
        smooth = None if sub.input_smooth is None else sub.input_smooth.float()
        if smooth is not None:  # the float twin computes (x * smooth) @ W^T as x @ (W * smooth)^T
            weight = weight * smooth[None, :]
        static = sub.input_scale is not None
        linear = nn.Linear(sub.in_features, sub.out_features, bias=sub.bias is not None)
        with torch.no_grad():
            linear.weight.copy_(weight)
            if sub.bias is not None:
                linear.bias.copy_(sub.bias.float())
        replace_module(twin, name, linear)
        extra = {
            "smooth": None if smooth is None else smooth.numpy(),
            "input_scale": float(sub.input_scale) if static else None,
            "input_zero": int(sub.input_zero) if static else None,
        }
        keys[weight.t().contiguous().numpy().tobytes()] = Target(f"{name}.weight", qt, True, **extra)
        keys.setdefault(weight.contiguous().numpy().tobytes(), Target(f"{name}.weight", qt, False, **extra))
    if not keys and not tables:
        raise Unsupported("ONNX integer export: the model has no quantized Linear or Embedding layer.")
    return Twin(twin, keys, tables)


def layers_used(twin, sample: Any, names: set[str]) -> set[str]:
    """Which of the layers `names` (module names, each with a `.weight`) the main output depends on
    (by autograd: BERT's pooler runs in forward but last_hidden_state does not depend on it)."""
    import torch

    from compress.eval.calls import call_module, main_output

    ordered = sorted(names)
    weights = [twin.get_submodule(n).weight for n in ordered]
    for weight in weights:
        weight.requires_grad_(True)
    try:
        with torch.inference_mode(False), torch.enable_grad():
            output = main_output(call_module(twin, sample)).float()
            grads = torch.autograd.grad(output.sum(), weights, allow_unused=True)
    finally:
        for weight in weights:
            weight.requires_grad_(False)
    return {n for n, g in zip(ordered, grads, strict=True) if g is not None}
