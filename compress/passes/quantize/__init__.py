"""The `quantize` pass: weight-only INT8 (per output channel) and INT4 (group-wise).

Round-to-nearest needs no forward pass, so besides the in-memory form (`apply`, on a live module)
it offers a streaming encoder that quantizes a checkpoint on disk one tensor at a time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from compress.config import PassConfig
from compress.errors import BadInput
from compress.formats.quantized import QuantizedTensor
from compress.passes.quantize.rtn import quantize_int4, quantize_int8, sqnr_db
from compress.registry import PassContext, PassResult, PassSpec
from compress.targets import Targets


@dataclass(frozen=True, kw_only=True)
class QuantizeConfig(PassConfig):
    """Weight-only quantization settings.

    scheme: int8 (symmetric, per output channel) or int4 (group-wise along the input dimension).
    group_size: INT4 group length; a power of two >= 16 that divides each targeted row.
    symmetric: INT4 with an implicit zero point (True) or a stored one per group (False).
    method: how codes are chosen; rtn = round to nearest.
    activations: none (weight-only) or dynamic (INT8 only: activations quantized per token at run
        time by the ONNX export's integer kernels; the torch module stays weight-only).
    weight_bits: INT8 code range: 8 (-127..127) or 7 (-63..63). Default: 7 with dynamic
        activations, 8 otherwise. ONNX Runtime's AVX2 u8 x s8 kernel adds pairs of products in int16
        (vpmaddubsw), which saturates with 8-bit weights (measured on MiniLM: output cosine 0.966
        to the unsaturated result); with 7-bit codes 255 * 63 * 2 < 32767 (ORT's reduce_range).
    targets: layer types and name globs; Linear layers by default, embeddings on request.
    """

    kind: ClassVar[str] = "quantize"
    scheme: Literal["int8", "int4"] = "int8"
    group_size: int = 128
    symmetric: bool = True
    method: Literal["rtn"] = "rtn"
    activations: Literal["none", "dynamic"] = "none"
    weight_bits: int | None = None
    targets: Targets = field(default_factory=Targets)

    def validate(self) -> None:
        if self.scheme == "int4":
            g = self.group_size
            if g < 16 or g & (g - 1):
                raise BadInput(
                    f"quantize.group_size: {g} is not a power of two >= 16 (ONNX Runtime's INT4 "
                    "kernels need one)."
                )
        if self.activations != "none" and self.scheme != "int8":
            raise BadInput(
                f"quantize.activations: '{self.activations}' needs scheme int8 (INT4 is weight-only)."
            )
        if self.weight_bits not in (None, 7, 8) or (self.weight_bits == 7 and self.scheme != "int8"):
            raise BadInput(f"quantize.weight_bits: {self.weight_bits} is not valid; int8 takes 8 or 7.")
        if self.scheme == "int8" and not self.symmetric:
            raise BadInput("quantize: int8 is symmetric only (use --scheme int4 for asymmetric).")

    @property
    def int8_bits(self) -> int:
        """The INT8 code width in effect (see weight_bits)."""
        if self.weight_bits is not None:
            return self.weight_bits
        return 7 if self.activations == "dynamic" else 8

    def describe(self) -> str:
        if self.scheme == "int8":
            bits = "" if self.int8_bits == 8 else f" {self.int8_bits}-bit"
            acts = "" if self.activations == "none" else f", {self.activations} activations"
            return f"int8{bits} per-channel{acts}, {self.method}"
        return f"int4 group {self.group_size}, {'sym' if self.symmetric else 'asym'}, {self.method}"


class RtnEncoder:
    """Tensor-by-tensor round-to-nearest, for streaming a checkpoint."""

    def plan(self, name: str, shape: tuple[int, ...], dtype, cfg: QuantizeConfig) -> dict:
        """The stored form's metadata, checked before any data is read."""
        if len(shape) < 2:
            raise BadInput(f"quantize: weight '{name}' has {len(shape)} dimension(s); need at least 2.")
        cols = math.prod(shape[1:])
        if cfg.scheme == "int4" and cols % cfg.group_size:
            raise BadInput(
                f"quantize: group size {cfg.group_size} does not divide the {cols} columns of "
                f"'{name}' (shape {list(shape)}); choose a group size that divides every targeted "
                "row, or exclude this layer."
            )
        return {
            "scheme": cfg.scheme,
            "shape": list(shape),
            "dtype": str(dtype).removeprefix("torch."),
            "group_size": cfg.group_size if cfg.scheme == "int4" else None,
            "symmetric": cfg.symmetric,
        }

    def encode(self, weight, cfg: QuantizeConfig) -> QuantizedTensor:
        if cfg.scheme == "int8":
            return quantize_int8(weight, cfg.int8_bits)
        return quantize_int4(weight, cfg.group_size, cfg.symmetric)


ENCODER = RtnEncoder()


def apply(module, cfg: QuantizeConfig, ctx: PassContext) -> PassResult:
    """Replace each targeted layer with its quantized form, in place."""
    from compress.layers import select_module_layers
    from compress.model import replace_module
    from compress.qmodules import _QuantizedWeight, quantized_module, set_activations

    groups = select_module_layers(module, cfg.targets, "quantize")
    changes: dict[str, dict] = {}
    if ctx.progress:
        ctx.progress.start("quantizing", total=len(groups))
    for names in groups:
        first = module.get_submodule(names[0])
        if isinstance(first, _QuantizedWeight):
            raise BadInput(
                f"quantize: layer '{names[0]}' is already quantized ({first.scheme}); quantize the "
                "float checkpoint instead."
            )
        weight = first.weight.detach()
        meta = ENCODER.plan(f"{names[0]}.weight", tuple(weight.shape), weight.dtype, cfg)
        qt = ENCODER.encode(weight, cfg)
        for name in names:
            replace_module(module, name, quantized_module(module.get_submodule(name), qt))
            set_activations(module.get_submodule(name), [cfg.to_dict()])
        changes[f"{names[0]}.weight"] = {
            **meta,
            "sqnr_db": sqnr_db(weight, qt.dequantize()),
            "tied": names[1:],
        }
        if ctx.progress:
            ctx.progress.advance()
    if ctx.progress:
        ctx.progress.done()
    return PassResult(module=module, changes=changes)


PASS = PassSpec(
    kind="quantize",
    config=QuantizeConfig,
    apply=apply,
    summary="weight-only INT8 (per channel) or INT4 (group-wise) quantization",
    stream=ENCODER,
)
