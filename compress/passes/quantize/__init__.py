"""The `quantize` pass: weight-only INT8 (per output channel) and INT4 (group-wise).

Methods choose the INT4 codes; every method stores them in the same format (ONNX Runtime's
MatMulNBits layout), so the result loads back and exports the same way whatever produced it:
- rtn: round to nearest (the default, no data);
- mse: per-group MSE-optimal clipping of the range (no data);
- hqq: HQQ-style refinement of the scales under a robust l_p loss (no data);
- gptq, awq: calibration data, processed block by block (see blockwise.py, sequential.py).
The data-free methods work tensor by tensor, so a checkpoint streams through them without being
built as a model; the data-aware ones run on the model, one block at a time.
"""

from __future__ import annotations

import fnmatch
import math
import time
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from compress.calib import CalibrationSettings
from compress.config import PassConfig
from compress.errors import BadInput
from compress.formats.quantized import QuantizedTensor
from compress.registry import PassContext, PassResult, PassSpec
from compress.targets import Targets

DATA_AWARE = ("gptq", "awq")
# Calibration batches hold about this many tokens (samples of one length are stacked).
TOKENS_PER_BATCH = 4096


@dataclass(frozen=True, kw_only=True)
class QuantizeConfig(PassConfig):
    """Weight-only quantization settings.

    scheme: int8 (symmetric, per output channel) or int4 (group-wise along the input dimension).
    group_size: INT4 group length; a power of two >= 16 that divides each targeted row.
    symmetric: INT4 with an implicit zero point (True) or a stored one per group (False).
    method: how INT4 codes are chosen: rtn, mse, hqq (no data); gptq, awq (calibration data).
    activations: none (weight-only), dynamic or static (INT8 only). dynamic: activations quantized
        per token at run time by the ONNX export's integer kernels; static: with one uint8 scale and
        zero point per layer input, calibrated on data. The torch module rounds them the same way.
    smooth: SmoothQuant's migration strength alpha (0 < alpha < 1, typically 0.5) for INT8 with
        activations: outlier activation channels are scaled down and the weights' columns up,
        calibrated on data (see activation_ranges.py). Default: 0.5 with static activations, off
        with dynamic ones.
    weight_bits: INT8 code range: 8 (-127..127) or 7 (-63..63). Default: 7 with quantized
        activations, 8 otherwise. ONNX Runtime's AVX2 u8 x s8 kernel adds pairs of products in int16
        (vpmaddubsw), which saturates with 8-bit weights (measured on MiniLM: output cosine 0.966
        to the unsaturated result); with 7-bit codes 255 * 63 * 2 < 32767 (ORT's reduce_range).
    targets: layer types and name globs; Linear layers by default, embeddings on request. Layers
        left out (targets.exclude) stay in float.
    keep_int8: layer name globs quantized to INT8 (per channel) in an INT4 run (mixed precision).
    calib: the calibration data of gptq and awq (source, samples, seq_len, seed).
    damp: gptq's damping, a fraction of the Hessian's mean diagonal (default 0.01).
    act_order: gptq quantizes the busiest input columns first (default true).
    clip: gptq and awq search each group's clipping range (default true).
    backend: compress (this pass) or nncf (NNCF does the work on the model's ONNX export; int8 is its
        static post-training quantization, int4 its weight compression; see compress.backends.nncf).
    """

    kind: ClassVar[str] = "quantize"
    scheme: Literal["int8", "int4"] = "int8"
    group_size: int = 128
    symmetric: bool = True
    method: Literal["rtn", "mse", "hqq", "gptq", "awq"] = "rtn"
    activations: Literal["none", "dynamic", "static"] = "none"
    smooth: float | None = None
    weight_bits: int | None = None
    targets: Targets = field(default_factory=Targets)
    keep_int8: tuple[str, ...] = ()
    calib: CalibrationSettings = field(default_factory=CalibrationSettings)
    damp: float | None = None
    act_order: bool | None = None
    clip: bool | None = None
    backend: Literal["compress", "nncf"] = "compress"

    def uses_data(self) -> bool:
        if self.backend == "nncf" and self.scheme == "int8":
            return True  # NNCF's static INT8 calibrates activation ranges
        return self.method in DATA_AWARE or self.calibrates_activations()

    def calibrates_activations(self) -> bool:
        """Whether compress measures activation ranges on data (static ranges or smoothing)."""
        return self.backend == "compress" and (self.activations == "static" or self.smooth_alpha is not None)

    @property
    def smooth_alpha(self) -> float | None:
        """The SmoothQuant strength in effect (see smooth)."""
        if self.smooth is not None:
            return self.smooth or None  # 0 turns smoothing off
        return 0.5 if self.activations == "static" and self.backend == "compress" else None

    def validate(self) -> None:
        if self.backend == "nncf":
            from compress.backends.nncf import check_settings

            check_settings(self)
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
        if self.smooth is not None and (self.activations == "none" or not 0 <= self.smooth < 1):
            raise BadInput(
                f"quantize.smooth: {self.smooth} is not valid; SmoothQuant takes 0 <= alpha < 1 (0: off) "
                "and applies to INT8 with activations dynamic or static."
            )
        if self.weight_bits not in (None, 7, 8) or (self.weight_bits == 7 and self.scheme != "int8"):
            raise BadInput(f"quantize.weight_bits: {self.weight_bits} is not valid; int8 takes 8 or 7.")
        if self.scheme == "int8" and not self.symmetric:
            raise BadInput("quantize: int8 is symmetric only (use --scheme int4 for asymmetric).")
        if self.scheme == "int8" and self.method != "rtn":
            raise BadInput(
                f"quantize: method {self.method} chooses INT4 codes; use scheme int4 with it (INT8 is "
                "round to nearest, which is already within a fraction of a percent of float)."
            )
        if self.keep_int8 and self.scheme != "int4":
            raise BadInput(
                "quantize.keep_int8: mixed precision keeps layers at INT8 in an INT4 run; use scheme int4."
            )
        only = {"damp": ("gptq",), "act_order": ("gptq",), "clip": DATA_AWARE}
        for name, methods in only.items():
            if getattr(self, name) is not None and self.method not in methods:
                raise BadInput(
                    f"quantize.{name}: applies to method {' and '.join(methods)}, not {self.method}."
                )
        if self.damp is not None and not 0 < self.damp < 1:
            raise BadInput(f"quantize.damp: {self.damp} is not between 0 and 1 (typical: 0.01).")
        if not self.uses_data() and self.calib != CalibrationSettings():
            raise BadInput(
                f"quantize.calib: method {self.method} needs no calibration data; calibration settings "
                f"apply to {' and '.join(DATA_AWARE)}, static activations and smoothing."
            )

    @property
    def int8_bits(self) -> int:
        """The INT8 code width in effect (see weight_bits)."""
        if self.weight_bits is not None:
            return self.weight_bits
        return 7 if self.activations != "none" else 8

    def describe(self) -> str:
        if self.backend == "nncf":
            from compress.backends.nncf import describe

            return describe(self)
        if self.scheme == "int8":
            bits = "" if self.int8_bits == 8 else f" {self.int8_bits}-bit"
            acts = "" if self.activations == "none" else f", {self.activations} activations"
            if self.smooth_alpha is not None:
                acts += f", smoothquant {self.smooth_alpha:g}"
            if self.calibrates_activations():
                c = self.calib
                acts += f" on {c.source} ({c.samples} x {c.seq_len} tokens, seed {c.seed})"
            return f"int8{bits} per-channel{acts}, {self.method}"
        text = f"int4 group {self.group_size}, {'sym' if self.symmetric else 'asym'}, {self.method}"
        if self.uses_data():
            c = self.calib
            text += f" on {c.source} ({c.samples} x {c.seq_len} tokens, seed {c.seed})"
        if self.keep_int8:
            text += f", int8: {', '.join(self.keep_int8)}"
        return text

    def scheme_of(self, names: list[str]) -> str:
        """The scheme of a weight owned by the layers `names` (INT8 when any is kept at INT8)."""
        if any(_matches(name, pattern) for name in names for pattern in self.keep_int8):
            return "int8"
        return self.scheme

    def check_keep_int8(self, names: list[str]) -> None:
        """BadInput for a keep_int8 pattern that matches none of the targeted layers."""
        for pattern in self.keep_int8:
            if not any(_matches(name, pattern) for name in names):
                shown = ", ".join(names[:4]) + (" ..." if len(names) > 4 else "")
                raise BadInput(
                    f"quantize.keep_int8: pattern '{pattern}' matches no targeted layer; "
                    f"layers look like: {shown}."
                )


def _matches(name: str, pattern: str) -> bool:
    name = name.removesuffix(".weight")
    return fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(f"{name}.weight", pattern)


class WeightEncoder:
    """Tensor-by-tensor quantization by a data-free method, for streaming a checkpoint."""

    def check(self, names: list[str], cfg: QuantizeConfig) -> None:
        cfg.check_keep_int8(names)

    def plan(self, name: str, shape: tuple[int, ...], dtype, cfg: QuantizeConfig) -> dict:
        """The stored form's metadata, checked before any data is read."""
        if len(shape) < 2:
            raise BadInput(f"quantize: weight '{name}' has {len(shape)} dimension(s); need at least 2.")
        scheme = cfg.scheme_of([name])
        cols = math.prod(shape[1:])
        if scheme == "int4" and cols % cfg.group_size:
            raise BadInput(
                f"quantize: group size {cfg.group_size} does not divide the {cols} columns of "
                f"'{name}' (shape {list(shape)}); choose a group size that divides every targeted "
                "row, or exclude this layer."
            )
        return {
            "scheme": scheme,
            "shape": list(shape),
            "dtype": str(dtype).removeprefix("torch."),
            "group_size": cfg.group_size if scheme == "int4" else None,
            "symmetric": cfg.symmetric if scheme == "int4" else True,
        }

    def encode(self, weight, cfg: QuantizeConfig, meta: dict | None = None) -> QuantizedTensor:
        from compress.passes.quantize.datafree import quantize_int4_data_free
        from compress.passes.quantize.rtn import quantize_int8

        scheme = meta["scheme"] if meta else cfg.scheme
        if scheme == "int8":
            return quantize_int8(weight, cfg.int8_bits)
        method = cfg.method if cfg.method not in DATA_AWARE else "mse"
        return quantize_int4_data_free(weight, cfg.group_size, cfg.symmetric, method)


ENCODER = WeightEncoder()


def apply(module, cfg: QuantizeConfig, ctx: PassContext) -> PassResult:
    """Replace each targeted layer with its quantized form, in place."""
    from compress.layers import select_module_layers
    from compress.qmodules import _QuantizedWeight

    if cfg.backend != "compress":
        raise BadInput(
            f"quantize.backend {cfg.backend}: writes an ONNX graph, not a torch model, so it runs only as "
            "a recipe's single pass from a checkpoint (compress quantize, compress run, "
            "compress_checkpoint), not on a model in memory or after another pass."
        )
    started = time.perf_counter()
    groups = select_module_layers(module, cfg.targets, "quantize")
    for names in groups:
        first = module.get_submodule(names[0])
        if isinstance(first, _QuantizedWeight):
            raise BadInput(
                f"quantize: layer '{names[0]}' is already quantized ({first.scheme}); quantize the "
                "float checkpoint instead."
            )
    cfg.check_keep_int8([n for names in groups for n in names])
    plans = {}
    for names in groups:
        weight = module.get_submodule(names[0]).weight
        meta = ENCODER.plan(f"{names[0]}.weight", tuple(weight.shape), weight.dtype, cfg)
        meta["scheme"] = cfg.scheme_of(names)
        if meta["scheme"] == "int8":
            meta.update(group_size=None, symmetric=True)
        plans[names[0]] = meta
    changes: dict[str, dict] = {}
    stats: dict[str, float] = {}
    ranges = _calibrate_activations(module, cfg, ctx, groups) if cfg.calibrates_activations() else []
    if cfg.method in DATA_AWARE:
        from compress.passes.quantize.apply_blocks import quantize_blockwise

        done, stats = quantize_blockwise(module, cfg, ctx, groups, plans, changes)
        groups = [names for names in groups if names[0] not in done]
    if ctx.weights is not None and groups:
        ctx.weights.load(*[n for names in groups for n in names])
    _quantize_each(module, cfg, groups, plans, changes, ctx.progress)
    _attach_activation_parts(module, cfg, ranges, changes)
    stats["quantize.seconds"] = time.perf_counter() - started
    from compress.memory import peak_rss_mb

    peak = peak_rss_mb()
    if peak is not None:
        stats["quantize.peak_rss_mb"] = peak
    return PassResult(module=module, changes=changes, stats=stats)


def _quantize_each(module, cfg: QuantizeConfig, groups, plans, changes, progress) -> None:
    """Data-free quantization of each group's weight (all of them, or those the blocks did not reach)."""
    from compress.model import replace_module
    from compress.passes.quantize.rtn import sqnr_db
    from compress.qmodules import quantized_module, set_activations

    if not groups:
        return
    method = cfg.method if cfg.method not in DATA_AWARE else "mse"
    if progress:
        progress.start("quantizing", total=len(groups))
    for names in groups:
        weight = module.get_submodule(names[0]).weight.detach()
        meta = plans[names[0]]
        qt = ENCODER.encode(weight, cfg, meta)
        for name in names:
            replace_module(module, name, quantized_module(module.get_submodule(name), qt))
            set_activations(module.get_submodule(name), [cfg.to_dict()])
        changes[f"{names[0]}.weight"] = {
            **meta,
            "method": "rtn" if meta["scheme"] == "int8" else method,
            "sqnr_db": sqnr_db(weight, qt.dequantize()),
            "tied": names[1:],
        }
        if progress:
            progress.advance()
    if progress:
        progress.done()


def _calibrate_activations(module, cfg: QuantizeConfig, ctx: PassContext, groups) -> list:
    """Measure the Linear layers' input ranges on the calibration data and smooth their weights."""
    from torch import nn

    from compress.calib import CalibrationData
    from compress.passes.quantize.activation_ranges import (
        AUTO,
        measure_input_ranges,
        smooth_weights,
        smoothing_strength,
    )

    if not isinstance(ctx.data, CalibrationData) or len(ctx.data) == 0:
        raise BadInput(
            "quantize: static activations and smoothing need calibration data (--calib FILE, or data= "
            "in Python)."
        )
    if ctx.weights is not None:
        ctx.weights.load()  # the calibration forward runs the whole model
    linear = [names for names in groups if isinstance(module.get_submodule(names[0]), nn.Linear)]
    alpha = smoothing_strength(cfg.smooth, cfg.activations)
    layers = [n for names in linear for n in names]
    ranges = measure_input_ranges(module, layers, ctx.data, ctx.progress, keep_rows=alpha == AUTO)
    if alpha is not None:
        tied = {n for names in linear if len(names) > 1 for n in names}
        smooth_weights(module, ranges, alpha, tied, bits=cfg.int8_bits)
    return ranges


def _attach_activation_parts(module, cfg: QuantizeConfig, ranges: list, changes: dict) -> None:
    """Store each quantized layer's smoothing factors and static range, and record them."""
    from compress.passes.quantize.activation_ranges import activation_parts, smoothing_alphas
    from compress.qmodules import QuantLinear

    alphas = smoothing_alphas(ranges)
    for name, parts in activation_parts(ranges, cfg.activations == "static").items():
        layer = module.get_submodule(name)
        if not isinstance(layer, QuantLinear):
            continue  # a layer left in float reads its input as it is
        layer.set_activation_parts(**parts)
        layer.activations = cfg.activations
        record = changes.setdefault(f"{name}.weight", {})
        if "input_smooth" in parts:
            record["smooth_max"] = float((1 / parts["input_smooth"]).max())
            record["smooth_alpha"] = alphas[name]
        if "input_scale" in parts:
            record["input_scale"] = float(parts["input_scale"])
            record["input_zero"] = int(parts["input_zero"])


PASS = PassSpec(
    kind="quantize",
    config=QuantizeConfig,
    apply=apply,
    summary="weight-only INT8 (per channel) or INT4 (group-wise) quantization: rtn, mse, hqq, gptq, awq",
    stream=ENCODER,
    deferred=True,
)
