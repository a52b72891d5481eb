"""compress's quantized weights in compressed-tensors' layout: schemes and tensors, no re-quantizing.

compressed-tensors (the format transformers and vLLM load; layout as in the package's 0.20 release)
stores a quantized Linear layer as
- pack-quantized (weight-only, W4A16 / W8A16): `weight_packed` int32, 32 / bits codes per word, the
  first code in the lowest bits, each code stored as `signed code + 2^(bits - 1)`; `weight_scale`;
  `weight_shape` (int64 [rows, cols]); asymmetric: `weight_zero_point`, signed, packed the same way
  along the rows (dim 0);
- int-quantized (W8A8): `weight` int8, `weight_scale` [rows, 1], and for static activations
  `input_scale` [1] and `input_zero_point` int8 [1].
Dequantization is `(code - zero_point) * scale` with signed codes in [-2^(bits-1), 2^(bits-1) - 1].

compress's INT4 codes are unsigned in [0, 15] with a zero point of 8 when symmetric (MatMulNBits),
so its signed code is `q - 8` and the stored nibble is `q` itself: the packed bits are compress's
own, four bytes to a word. An INT8 code q (8- or 7-bit, symmetric) is stored as `q + 128` in
pack-quantized and as is in int-quantized. compress's static activations are uint8 with a zero
point in [0, 255]; the int8 zero point is `zero - 128` over the same grid (vLLM's kernel rounds
`x / scale` and adds the zero point, as compress does).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from compress.formats.quantized import QuantizedTensor

PACK_QUANTIZED = "pack-quantized"
INT_QUANTIZED = "int-quantized"


@dataclass(frozen=True)
class LayerExport:
    """One quantized layer as compressed-tensors stores it."""

    scheme: dict[str, Any]  # a QuantizationScheme without its targets
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)  # local names (weight_packed, ...)


def weight_args(qt: QuantizedTensor) -> dict[str, Any]:
    """The QuantizationArgs of a compress weight (INT8 per output channel, INT4 per group)."""
    if qt.scheme == "int8":
        args = {"num_bits": 8, "type": "int", "symmetric": True, "group_size": None, "strategy": "channel"}
    else:
        args = {
            "num_bits": 4,
            "type": "int",
            "symmetric": qt.symmetric,
            "group_size": qt.group_size,
            "strategy": "group",
        }
    return {**args, "dynamic": False}


def input_args(activations: str) -> dict[str, Any] | None:
    """The QuantizationArgs of compress's activation modes; None for weight-only."""
    if activations == "dynamic":  # symmetric int8, one scale per token: max|x| / 127
        return {
            "num_bits": 8,
            "type": "int",
            "symmetric": True,
            "group_size": None,
            "strategy": "token",
            "dynamic": True,
        }
    if activations == "static":  # one calibrated asymmetric scale and zero point per layer input
        return {
            "num_bits": 8,
            "type": "int",
            "symmetric": False,
            "group_size": None,
            "strategy": "tensor",
            "dynamic": False,
        }
    return None


def layer_export(
    qt: QuantizedTensor, activations: str, parts: dict[str, torch.Tensor], scale_dtype: torch.dtype
) -> LayerExport:
    """The scheme and tensors of one quantized layer; `parts` holds its static input_scale/zero.
    INT4 scales are written as `scale_dtype`, float16 or float32: both hold compress's float16 exactly."""
    inputs = input_args(activations)
    fmt = INT_QUANTIZED if inputs is not None else PACK_QUANTIZED
    scheme = {
        "weights": weight_args(qt),
        "input_activations": inputs,
        "output_activations": None,
        "format": fmt,
    }
    rows, cols = qt.rows, qt.cols
    if qt.scheme == "int8" and fmt == INT_QUANTIZED:
        tensors = {"weight": qt.data.reshape(rows, cols).contiguous()}
    elif qt.scheme == "int8":
        tensors = {"weight_packed": pack_int32(qt.data.reshape(rows, cols).to(torch.int16) + 128, 8)}
    else:
        tensors = {"weight_packed": pack_int32(qt.codes(), 4)}
        if not qt.symmetric:  # signed zero z - 8 is stored as z, packed along the rows
            tensors["weight_zero_point"] = pack_int32(qt.zero_points().t(), 4).t().contiguous()
    if fmt == PACK_QUANTIZED:
        tensors["weight_shape"] = torch.tensor([rows, cols], dtype=torch.int64)
    scale = qt.scale.to(scale_dtype) if qt.scheme == "int4" else qt.scale.reshape(rows, 1)
    tensors["weight_scale"] = scale.contiguous()
    if activations == "static":
        tensors["input_scale"] = parts["input_scale"].reshape(1).to(torch.float32)
        zero = parts["input_zero"].reshape(1).to(torch.int16) - 128
        tensors["input_zero_point"] = zero.to(torch.int8)
    return LayerExport(scheme=scheme, tensors=tensors)


def pack_int32(values: torch.Tensor, bits: int) -> torch.Tensor:
    """Unsigned codes in [0, 2^bits) of shape [rows, n] as int32 words along dim 1: 32 / bits codes
    per word, code k of a word in bits [k * bits, (k + 1) * bits); the last word padded with zeros."""
    per = 32 // bits
    rows, n = values.shape
    words = -(-n // per)
    padded = torch.zeros(rows, words * per, dtype=torch.int64)
    padded[:, :n] = values.to(torch.int64)
    shifts = torch.arange(per, dtype=torch.int64) * bits
    packed = (padded.reshape(rows, words, per) << shifts).sum(dim=-1)
    packed = torch.where(packed >= 2**31, packed - 2**32, packed)  # the same 32 bits, read as signed
    return packed.to(torch.int32)
