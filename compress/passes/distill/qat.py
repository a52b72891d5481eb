"""Quantization-aware training: train a quantized student's weights through fake quantization.

Each quantized layer becomes a float layer whose forward uses its weight rounded exactly as the
quantize pass would store it (the same scale and code functions of passes/quantize/rtn.py), with a
straight-through gradient: the rounding is skipped on the way back. At the end each weight is
encoded with those functions, so the saved codes are the ones the last forward used.
"""

from __future__ import annotations

import torch
from torch import nn

from compress.formats.quantized import QuantizedTensor
from compress.passes.quantize.rtn import (
    as_matrix,
    int4_codes,
    int4_params,
    int8_scale,
    quantize_int4,
    quantize_int8,
)


def fake_quantize(w: torch.Tensor, scheme: str, group_size: int | None, symmetric: bool) -> torch.Tensor:
    """The weight as the quantize pass would decode it, with a straight-through gradient."""
    with torch.no_grad():
        w2d = as_matrix(w.detach())
        if scheme == "int8":
            scale = int8_scale(w2d)
            q = torch.round(w2d / scale[:, None]).clamp_(-127, 127) * scale[:, None]
        else:
            rows, cols = w2d.shape
            groups = w2d.reshape(rows, cols // group_size, group_size)
            scale, zero = int4_params(groups, symmetric)
            codes = int4_codes(groups, scale, zero).to(torch.float32)
            q = (codes - zero[..., None]) * scale[..., None]
        q = q.reshape(w.shape).to(w.dtype)
    return w + (q - w).detach()


def encode(w: torch.Tensor, scheme: str, group_size: int | None, symmetric: bool) -> QuantizedTensor:
    w = w.detach()
    if scheme == "int8":
        return quantize_int8(w)
    return quantize_int4(w, group_size, symmetric)


class FakeQuantWeight(nn.Module):
    """Wraps a float Linear/Embedding/Conv copy of a quantized layer; its forward sees the fake-quantized
    weight. `scheme`, `group_size` and `symmetric` are those of the stored weight."""

    def __init__(self, float_layer: nn.Module, qt: QuantizedTensor):
        super().__init__()
        self.layer = float_layer
        self.scheme, self.group_size, self.symmetric = qt.scheme, qt.group_size, qt.symmetric

    def forward(self, *args, **kwargs):
        w = self.layer.weight
        q = fake_quantize(w, self.scheme, self.group_size, self.symmetric)
        # Call the float layer with the fake-quantized weight in place of its own.
        return torch.func.functional_call(self.layer, {"weight": q}, args, kwargs)

    def quantized(self) -> QuantizedTensor:
        return encode(self.layer.weight, self.scheme, self.group_size, self.symmetric)


def float_copy(qmodule) -> nn.Module:
    """A trainable float layer with the dequantized weight of a QuantLinear/QuantEmbedding/QuantConv."""
    from compress.qmodules import QuantConv, QuantEmbedding, QuantLinear

    qt = qmodule.qweight
    weight = nn.Parameter(qt.dequantize(torch.float32))
    if isinstance(qmodule, QuantLinear):
        layer = nn.Linear(qmodule.in_features, qmodule.out_features, bias=qmodule.bias is not None)
        if qmodule.bias is not None:
            layer.bias = nn.Parameter(qmodule.bias.detach().clone().float())
    elif isinstance(qmodule, QuantEmbedding):
        layer = nn.Embedding(qmodule.num_embeddings, qmodule.embedding_dim, padding_idx=qmodule.padding_idx)
        if qmodule.embed_scale is not None:  # Gemma scales the rows it looks up
            raise NotImplementedError("QAT of a scaled embedding table")
    elif isinstance(qmodule, QuantConv):
        conv = (nn.Conv1d, nn.Conv2d, nn.Conv3d)[qmodule.dims - 1]
        shape = qt.shape
        layer = conv(
            shape[1] * qmodule.groups,
            shape[0],
            tuple(shape[2:]),
            stride=qmodule.stride,
            padding=qmodule.padding,
            dilation=qmodule.dilation,
            groups=qmodule.groups,
            bias=qmodule.bias is not None,
        )
        if qmodule.bias is not None:
            layer.bias = nn.Parameter(qmodule.bias.detach().clone().float())
    else:
        raise TypeError(f"no float form for a {type(qmodule).__name__}")
    layer.weight = weight
    return layer


def to_fake_quant(module) -> list[str]:
    """Replace every quantized layer of `module` by a FakeQuantWeight; returns their names.

    Layers that share one stored weight (a tied output head) share one float weight too."""
    from compress.model import replace_module
    from compress.qmodules import _QuantizedWeight

    names = [n for n, m in module.named_modules(remove_duplicate=False) if isinstance(m, _QuantizedWeight)]
    shared: dict[int, nn.Parameter] = {}
    for name in names:
        qmodule = module.get_submodule(name)
        key = qmodule.weight.untyped_storage().data_ptr()
        layer = float_copy(qmodule)
        if key in shared:
            layer.weight = shared[key]
        shared.setdefault(key, layer.weight)
        replace_module(module, name, FakeQuantWeight(layer, qmodule.qweight))
    return names


def from_fake_quant(module, names: list[str]) -> None:
    """Encode each trained FakeQuantWeight back into its quantized layer (the stored format)."""
    from compress.model import replace_module
    from compress.qmodules import quantized_module

    encoded: dict[int, QuantizedTensor] = {}
    for name in names:
        fake = module.get_submodule(name)
        key = id(fake.layer.weight)
        qt = encoded.setdefault(key, fake.quantized())
        replace_module(module, name, quantized_module(fake.layer, qt))
