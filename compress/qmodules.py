"""Runnable modules whose weight is stored quantized and dequantized on the fly.

The stored parts are registered as buffers named `weight`, `weight_scale` and `weight_zero`, so a
module's state_dict keys are exactly the names in the compressed checkpoint. On CPU, dequantizing
then calling the float kernel costs about as much as the float model (measured on MiniLM shapes);
the integer speed-ups come from the ONNX Runtime export and compress.kernels (CUDA, CPU decoding).
A 16-bit weight (bf16, fp16) is stored as it is and its layer computes in that dtype (Float16Linear,
Float16Embedding, Float16Conv; compress.precision runs the rest of the model around them).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from compress.formats.float16 import Float16Tensor
from compress.formats.quantized import QuantizedTensor
from compress.kernels import Kernel, plan_for, quant_linear_forward


class _QuantizedWeight(nn.Module):
    """Holds one QuantizedTensor as buffers and rebuilds it on demand."""

    def _set_qweight(self, qt: QuantizedTensor) -> None:
        self.register_buffer("weight", qt.data)
        self.register_buffer("weight_scale", qt.scale)
        if qt.zero is not None:
            self.register_buffer("weight_zero", qt.zero)
        else:
            self.weight_zero = None
        self.scheme = qt.scheme
        self.weight_shape = tuple(qt.shape)
        self.weight_dtype = qt.dtype
        self.group_size = qt.group_size

    @property
    def qweight(self) -> QuantizedTensor:
        return QuantizedTensor(
            scheme=self.scheme,
            data=self.weight,
            scale=self.weight_scale,
            zero=self.weight_zero,
            shape=self.weight_shape,
            dtype=self.weight_dtype,
            group_size=self.group_size,
        )

    def share_from(self, other: _QuantizedWeight) -> None:
        """Use another module's stored weight (tied embeddings and output heads)."""
        self._set_qweight(other.qweight)

    def dequantized_weight(self, dtype: torch.dtype) -> torch.Tensor:
        return self.qweight.dequantize(dtype)


def per_token_fake_quant(x: torch.Tensor) -> torch.Tensor:
    """Round each row of `x` to 8-bit symmetric codes of its own scale max|row| / 127, as the ONNX
    export's integer kernels do at run time (same float operations, round half to even)."""
    scale = x.abs().amax(dim=-1, keepdim=True).clamp(min=1e-30) * torch.tensor(1 / 127, dtype=x.dtype)
    return torch.round(x / scale).clamp(-128, 127) * scale


def static_fake_quant(x: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    """Round `x` to uint8 codes of one calibrated scale and zero point, as the ONNX export's
    QuantizeLinear does (round half to even, saturate to 0..255)."""
    codes = torch.clamp(torch.round(x / scale.to(x.dtype)) + zero.to(x.dtype), 0, 255)
    return (codes - zero.to(x.dtype)) * scale.to(x.dtype)


# Activation tensors a QuantLinear may carry besides its weight (all stored as plain float tensors):
# input_smooth: SmoothQuant's per-input-channel factor 1/s, multiplied into the input before it is
#   quantized (the stored weight holds W * s, so the product is unchanged);
# input_scale, input_zero: the calibrated per-tensor range of static activations (zero in 0..255).
ACTIVATION_PARTS = ("input_smooth", "input_scale", "input_zero")


class QuantLinear(_QuantizedWeight):
    # "dynamic": inputs are quantized per token at run time; "static": with the calibrated
    # input_scale/input_zero. Either way torch rounds exactly as the integer ONNX graph does.
    activations = "none"

    def __init__(self, qt: QuantizedTensor, bias: torch.Tensor | None):
        super().__init__()
        self.out_features, self.in_features = qt.shape
        self._set_qweight(qt)
        self.bias = nn.Parameter(bias.detach().clone(), requires_grad=False) if bias is not None else None
        for part in ACTIVATION_PARTS:
            self.register_buffer(part, None)  # None buffers are left out of the state_dict

    def set_activation_parts(self, **parts: torch.Tensor) -> None:
        """Register SmoothQuant factors and/or a static range (see ACTIVATION_PARTS) as buffers."""
        for part, value in parts.items():
            if part not in ACTIVATION_PARTS:
                raise KeyError(part)
            self.register_buffer(part, value.detach().float().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return quant_linear_forward(self, x)  # an integer kernel or dequantized_forward

    def smoothed_input(self, x: torch.Tensor) -> torch.Tensor:
        """`x` times the SmoothQuant factors, if the layer has them (every kernel path starts here)."""
        return x if self.input_smooth is None else x * self.input_smooth.to(x.dtype)

    def dequantized_forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.smoothed_input(x)
        if self.activations == "dynamic":
            x = per_token_fake_quant(x)
        elif self.activations == "static":
            x = static_fake_quant(x, self.input_scale, self.input_zero)
        return F.linear(x, self.dequantized_weight(x.dtype), self.bias)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, {self.scheme}, group={self.group_size}"


class QuantEmbedding(_QuantizedWeight):
    def __init__(self, qt: QuantizedTensor, original: nn.Embedding):
        super().__init__()
        self.num_embeddings, self.embedding_dim = qt.shape
        self._set_qweight(qt)
        self.padding_idx = original.padding_idx
        # Some architectures (Gemma) scale the looked-up rows; keep that behaviour.
        scale = getattr(original, "embed_scale", None)
        if scale is not None:
            self.register_buffer("embed_scale", torch.as_tensor(scale), persistent=False)
        else:
            self.embed_scale = None

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        # Dequantize only the rows looked up: a vocabulary can be far larger than a batch.
        qt = self.qweight
        flat = ids.reshape(-1)
        rows = QuantizedTensor(
            scheme=qt.scheme,
            data=qt.data[flat],
            scale=qt.scale[flat],
            zero=qt.zero[flat] if qt.zero is not None else None,
            shape=(flat.numel(), self.embedding_dim),
            dtype=qt.dtype,
            group_size=qt.group_size,
        ).dequantize()
        out = rows.reshape(*ids.shape, self.embedding_dim)
        if self.embed_scale is not None:
            out = out * self.embed_scale.to(out.dtype)
        return out

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, {self.scheme}, group={self.group_size}"


class QuantConv(_QuantizedWeight):
    """Conv1d/2d/3d with a quantized kernel; stride, padding and groups come from the original."""

    def __init__(self, qt: QuantizedTensor, original: nn.modules.conv._ConvNd):
        super().__init__()
        self._set_qweight(qt)
        self.bias = (
            nn.Parameter(original.bias.detach().clone(), requires_grad=False)
            if original.bias is not None
            else None
        )
        self.dims = len(qt.shape) - 2
        self.stride, self.padding = original.stride, original.padding
        self.dilation, self.groups = original.dilation, original.groups
        if original.padding_mode != "zeros":
            raise ValueError("quantized convolutions support padding_mode='zeros' only")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = (F.conv1d, F.conv2d, F.conv3d)[self.dims - 1]
        return conv(
            x,
            self.dequantized_weight(x.dtype),
            self.bias,
            self.stride,
            self.padding,
            self.dilation,
            self.groups,
        )


class _Float16Weight(_QuantizedWeight):
    """A layer whose weight is stored in 16 bits (bf16, fp16) and which computes in that dtype: its
    input is rounded to it, its output stays in it. Its bias stays as stored (float32, a few hundred
    values) and is rounded at each call, so the module holds exactly what the checkpoint holds."""

    def _set_qweight(self, ft: Float16Tensor) -> None:  # type: ignore[override]
        self.register_buffer("weight", ft.data)
        self.weight_scale = self.weight_zero = None
        self.scheme = ft.scheme
        self.weight_shape = tuple(ft.shape)
        self.weight_dtype = ft.dtype
        self.group_size = None

    @property
    def qweight(self) -> Float16Tensor:  # type: ignore[override]
        return Float16Tensor(self.scheme, self.weight, self.weight_dtype)

    def _bias(self) -> torch.Tensor | None:
        bias = getattr(self, "bias", None)
        return None if bias is None else bias.to(self.weight.dtype)


class Float16Linear(_Float16Weight):
    def __init__(self, ft: Float16Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.out_features, self.in_features = ft.shape
        self._set_qweight(ft)
        self.bias = nn.Parameter(bias.detach().clone(), requires_grad=False) if bias is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x.to(self.weight.dtype), self.weight, self._bias())

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, {self.scheme}"


class Float16Embedding(_Float16Weight):
    def __init__(self, ft: Float16Tensor, original: nn.Embedding):
        super().__init__()
        self.num_embeddings, self.embedding_dim = ft.shape
        self._set_qweight(ft)
        self.padding_idx = original.padding_idx
        scale = getattr(original, "embed_scale", None)  # Gemma scales the rows it looks up
        if scale is not None:
            self.register_buffer("embed_scale", torch.as_tensor(scale), persistent=False)
        else:
            self.embed_scale = None

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out = F.embedding(ids, self.weight, self.padding_idx)
        return out if self.embed_scale is None else out * self.embed_scale.to(out.dtype)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, {self.scheme}"


class Float16Conv(_Float16Weight):
    """Conv1d/2d/3d computing in 16 bits; stride, padding and groups come from the original."""

    def __init__(self, ft: Float16Tensor, original: nn.modules.conv._ConvNd):
        super().__init__()
        self._set_qweight(ft)
        self.bias = (
            nn.Parameter(original.bias.detach().clone(), requires_grad=False)
            if original.bias is not None
            else None
        )
        self.dims = len(ft.shape) - 2
        self.stride, self.padding = original.stride, original.padding
        self.dilation, self.groups = original.dilation, original.groups
        if getattr(original, "padding_mode", "zeros") != "zeros":
            raise ValueError("16-bit convolutions support padding_mode='zeros' only")
        self.padding_mode = "zeros"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = (F.conv1d, F.conv2d, F.conv3d)[self.dims - 1]
        x = x.to(self.weight.dtype)
        return conv(x, self.weight, self._bias(), self.stride, self.padding, self.dilation, self.groups)


ACTIVATION_MODES = ("none", "dynamic", "static")


def set_activation_mode(layer: nn.Module, mode: str) -> None:
    """Make a quantized Linear layer round its input as the integer graph does: per token at run
    time (dynamic) or with its calibrated range (static, which needs one)."""
    if not isinstance(layer, QuantLinear):
        raise TypeError(f"activations are quantized on Linear layers only, not a {type(layer).__name__}")
    if mode not in ACTIVATION_MODES:
        raise ValueError(f"unknown activation mode {mode!r}; valid: {', '.join(ACTIVATION_MODES)}")
    if mode == "static" and layer.input_scale is None:
        raise ValueError("static activations need a calibrated input range, and the layer has none")
    layer.activations = mode


def quantized_module(original: nn.Module, qt: QuantizedTensor | Float16Tensor) -> nn.Module:
    """The quantized (or 16-bit) replacement for `original` (Linear, Embedding or Conv)."""
    if isinstance(qt, Float16Tensor):
        return _float16_module(original, qt)
    if isinstance(original, nn.Linear):
        return QuantLinear(qt, original.bias)
    if isinstance(original, nn.Embedding):
        return QuantEmbedding(qt, original)
    if isinstance(original, nn.modules.conv._ConvNd) and not original.transposed:
        return QuantConv(qt, original)
    raise TypeError(f"cannot quantize a {type(original).__name__}")


def _float16_module(original: nn.Module, ft: Float16Tensor) -> nn.Module:
    if isinstance(original, nn.Linear | Float16Linear):
        return Float16Linear(ft, original.bias)
    if isinstance(original, nn.Embedding | Float16Embedding):
        return Float16Embedding(ft, original)  # type: ignore[arg-type]
    if isinstance(original, nn.modules.conv._ConvNd | Float16Conv) and not getattr(
        original, "transposed", False
    ):
        return Float16Conv(ft, original)  # type: ignore[arg-type]
    raise TypeError(f"cannot store a {type(original).__name__} in 16 bits")


def refuse_encoded(module: nn.Module, groups: list[list[str]]) -> None:
    """BadInput when a targeted layer of `module` is already encoded (a pass runs on float weights)."""
    from compress.errors import BadInput

    for names in groups:
        first = module.get_submodule(names[0])
        if isinstance(first, _QuantizedWeight):
            raise BadInput(
                f"quantize: layer '{names[0]}' is already quantized ({first.scheme}); quantize the "
                "float checkpoint instead."
            )


def module_kind(module: nn.Module) -> str | None:
    """The target type name of a module ('linear', 'embedding', 'conv'), or None."""
    if isinstance(module, nn.Linear | QuantLinear | Float16Linear):
        return "linear"
    if isinstance(module, nn.Embedding | QuantEmbedding | Float16Embedding):
        return "embedding"
    if isinstance(module, nn.modules.conv._ConvNd | QuantConv | Float16Conv) and not getattr(
        module, "transposed", False
    ):
        return "conv"
    return None


def kernels(model: Any, dtype: Any = None) -> dict[str, Kernel]:
    """The kernel each QuantLinear of `model` runs on its current device, for inputs of the layer's
    original weight dtype unless `dtype` says otherwise."""
    return {
        name: plan_for(sub, sub.weight.device, dtype or sub.weight_dtype).kernel
        for name, sub in model.named_modules()
        if isinstance(sub, QuantLinear)
    }


def kernels_ran(model: Any) -> dict[str, int]:
    """How many quantized Linear layers ran each kernel in their last call, e.g.
    {'dequantize+F.linear': 36}; empty when none has run."""
    counts: dict[str, int] = {}
    for sub in model.modules():
        kernel = getattr(sub, "kernel", None) if isinstance(sub, QuantLinear) else None
        if kernel is not None:
            counts[kernel.name] = counts.get(kernel.name, 0) + 1
    return counts
