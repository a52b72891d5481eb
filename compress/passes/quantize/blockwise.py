"""GPTQ and AWQ on one block: statistics from the block's calibration inputs, then quantized weights.

Every Linear layer of the block is observed (a layer left in float still reads the tensors that
AWQ rescales); only the targeted ones are quantized: INT4 by the method, INT8 (round to nearest,
per channel) for the layers kept at INT8, and the data-free MSE clipping for any layer the
calibration data never reached.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from compress.formats.quantized import QuantizedTensor
from compress.passes.quantize import awq
from compress.passes.quantize.config import AwqConfig, GptqConfig
from compress.passes.quantize.datafree import quantize_int4_data_free
from compress.passes.quantize.gptq import gptq_int4
from compress.passes.quantize.rtn import int4_codes, int4_params, pack_int4_tensor, quantize_int8, sqnr_db
from compress.passes.quantize.stats import InputStats, collect_input_stats
from compress.sequential import BlockInputs


@dataclass
class QuantizedLayer:
    tensor: QuantizedTensor
    method: str
    sqnr_db: float  # against the float weight the codes approximate (after any AWQ rescaling)
    details: dict = field(default_factory=dict)

    @classmethod
    def of(cls, tensor: QuantizedTensor, weight: torch.Tensor, method: str, details: dict | None = None):
        return cls(tensor, method, sqnr_db(weight, tensor.dequantize()), details or {})


def quantize_block(
    block,
    inputs: BlockInputs,
    schemes: dict[str, str],
    settings: GptqConfig | AwqConfig,
    fold_hints: dict | None = None,
) -> dict[str, QuantizedLayer]:
    """Quantize the block's layers named in `schemes` (name within the block -> int4 | int8).
    `fold_hints` carries AWQ's folds from one block to the next (see awq.find_folds)."""
    linears = [name for name, m in block.named_modules() if isinstance(m, nn.Linear)]
    stats, reference = collect_input_stats(block, linears, inputs)
    if settings.method == "awq":
        return _awq(
            block, inputs, stats, reference, schemes, settings, {} if fold_hints is None else fold_hints
        )
    return _gptq(block, stats, schemes, settings)


def _gptq(block, stats: list[InputStats], schemes: dict[str, str], s: Any) -> dict:
    def int4(name: str, weight: torch.Tensor, group: InputStats, _index: int):
        codes, scale, zero = gptq_int4(
            weight,
            group.gram,
            s.group_size,
            s.symmetric,
            damp=s.damp,
            act_order=s.act_order,
            clip=s.clip,
            name=name,
        )
        shape = tuple(weight.shape)
        return pack_int4_tensor(codes, scale, zero, shape, weight.dtype, s.group_size, s.symmetric), {}

    return _quantize_layers(block, stats, schemes, s, "gptq", int4)


def _awq(
    block,
    inputs: BlockInputs,
    stats: list[InputStats],
    reference,
    schemes: dict[str, str],
    s: Any,
    hints,
) -> dict:
    scales: dict[int, torch.Tensor] = {}
    details: dict[str, dict] = {}
    scaled = [i for i, g in enumerate(stats) if g.tokens and any(name in schemes for name in g.layers)]
    folds = dict(
        zip(scaled, awq.find_folds(block, [stats[i] for i in scaled], inputs, reference, hints), strict=True)
    )
    for index in scaled:
        group = stats[index]
        quantized = [name for name in group.layers if name in schemes]
        fold = folds[index]
        if fold is None:
            for name in quantized:
                details[name] = {"awq_scale": "none (no module to fold the scale into)"}
            continue
        weights = {name: block.get_submodule(name).weight.detach().to(torch.float32) for name in group.layers}
        quantizers = {
            name: awq.int8_dequantizer()
            if schemes[name] == "int8"
            else awq.rtn_dequantizer(s.group_size, s.symmetric)
            for name in quantized
        }
        scale, alpha = awq.search_scale(group, weights, quantizers)
        for name in quantized:
            details[name] = {"awq_alpha": alpha, "awq_fold": f"{fold[0]} ({fold[1]})"}
        if alpha == 0.0:
            continue
        awq.apply_fold(block, group.layers, fold[0], fold[1], scale)
        scales[index] = scale

    def int4(name: str, weight: torch.Tensor, group: InputStats, index: int):
        scale = scales.get(index)  # the layer reads x / scale now: its Gram matrix follows
        gram = group.gram if scale is None else group.gram / (scale[:, None] * scale[None, :])
        w = weight.to(torch.float32)
        if s.clip:
            scale_q, zero_q = awq.clip_int4(w, gram, s.group_size, s.symmetric)
        else:
            rows, cols = w.shape
            scale_q, zero_q = int4_params(w.reshape(rows, cols // s.group_size, s.group_size), s.symmetric)
        return _pack(weight, scale_q, zero_q, s), details.get(name, {})

    return _quantize_layers(block, stats, schemes, s, "awq", int4)


# (layer name, weight, its input group, the group's index) -> INT4 tensor, details for the report
Int4Quantizer = Callable[[str, torch.Tensor, InputStats, int], tuple[QuantizedTensor, dict]]


def _quantize_layers(
    block,
    stats: list[InputStats],
    schemes: dict[str, str],
    s: Any,
    method: str,
    int4: Int4Quantizer,
) -> dict[str, QuantizedLayer]:
    """Each targeted layer of each input group: `int4(name, weight, group, index)` gives the INT4 tensor and
    details; layers kept at INT8, or that no calibration token reached, take the fallback."""
    out = {}
    for index, group in enumerate(stats):
        for name in group.layers:
            if name not in schemes:
                continue
            weight = block.get_submodule(name).weight.detach()
            if schemes[name] == "int8" or group.tokens == 0:
                out[name] = _fallback(weight, schemes[name], s)
                continue
            tensor, extra = int4(name, weight, group, index)
            out[name] = QuantizedLayer.of(tensor, weight, method, {"tokens": group.tokens, **extra})
    return out


def _pack(weight: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, s: Any) -> QuantizedTensor:
    rows, cols = weight.shape
    groups = weight.to(torch.float32).reshape(rows, cols // s.group_size, s.group_size)
    codes = int4_codes(groups, scale, zero).reshape(rows, cols)
    return pack_int4_tensor(codes, scale, zero, tuple(weight.shape), weight.dtype, s.group_size, s.symmetric)


def _fallback(weight: torch.Tensor, scheme: str, s: Any) -> QuantizedLayer:
    if scheme == "int8":
        return QuantizedLayer.of(quantize_int8(weight), weight, "rtn")
    tensor = quantize_int4_data_free(weight, s.group_size, s.symmetric, "mse")
    return QuantizedLayer.of(tensor, weight, "mse", {"note": "no calibration tokens reached this layer"})
