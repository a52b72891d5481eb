"""The `quantize` pass: INT8 (per output channel) and INT4 (group-wise) weights, INT8 activations.

Methods choose the INT4 codes; every method stores them in the same format (ONNX Runtime's
MatMulNBits layout), so the result loads back and exports the same way whatever produced it:
- rtn: round to nearest (the default, no data);
- mse: per-group MSE-optimal clipping of the range (no data);
- hqq: HQQ-style refinement of the scales under a robust l_p loss (no data);
- gptq, awq: calibration data, processed block by block (see blockwise.py, sequential.py).
The data-free methods work tensor by tensor, so a checkpoint streams through them without being
built as a model (`ENCODER`); the data-aware ones run on the model, one block at a time. Schemes
bf16 and fp16 round weights to 16 bits and stream the same way (float16.py). The settings of each
method are a class of their own (config.py).
"""

from __future__ import annotations

import time

from compress.errors import BadInput
from compress.formats.float16 import Float16Tensor
from compress.formats.quantized import QuantizedTensor
from compress.passes.quantize.config import (
    DATA_AWARE,
    AwqConfig,
    Float16Config,
    GptqConfig,
    Int4Config,
    Int8Config,
    NncfConfig,
    Quantize,
    QuantizeConfig,
    int4_cols_fit,
)
from compress.passes.quantize.float16 import FLOAT16, apply_float16
from compress.registry import PassContext, PassResult, PassSpec

__all__ = [
    "PASS",
    "AwqConfig",
    "Float16Config",
    "GptqConfig",
    "Int4Config",
    "Int8Config",
    "NncfConfig",
    "Quantize",
    "QuantizeConfig",
]


class WeightEncoder:
    """Tensor-by-tensor quantization by a data-free method (Int8Config, Int4Config): used on a model
    in memory and, without building the model, on a checkpoint streamed tensor by tensor."""

    def can_stream(self, cfg: QuantizeConfig) -> bool:
        if isinstance(cfg, Float16Config):
            return True
        return isinstance(cfg, Int8Config | Int4Config) and not isinstance(cfg, GptqConfig | AwqConfig)

    def check(self, names: list[str], cfg: QuantizeConfig) -> None:
        cfg.check_layers(names)

    def plan(
        self, names: list[str], shape: tuple[int, ...], cfg: QuantizeConfig, kind: str | None = None
    ) -> str:
        """The scheme of the weight that the layers (or stored weights) `names` own, checked against
        its shape before any data is read. `kind`: "embedding" when one of them is an embedding table
        (an output head may share it), else the layer type (None: unknown)."""
        if isinstance(cfg, Float16Config):
            return FLOAT16.plan(names, shape, cfg)
        if len(shape) < 2:
            raise BadInput(f"quantize: weight '{names[0]}' has {len(shape)} dimension(s); need at least 2.")
        scheme = cfg.scheme_of(names, kind == "embedding")
        if scheme == "int4":
            int4_cols_fit(cfg, names[0], shape)
        return scheme

    def encode(
        self, weight, cfg: QuantizeConfig, scheme: str, name: str | None = None
    ) -> QuantizedTensor | Float16Tensor:
        """`name` names the weight in a refusal of NaN/Inf (see compress.finite)."""
        if isinstance(cfg, Float16Config):
            return FLOAT16.encode(weight, cfg, scheme, name)
        from compress.passes.quantize.datafree import quantize_int4_data_free
        from compress.passes.quantize.rtn import quantize_int8

        allow = cfg.allow_nonfinite
        if scheme == "int8":
            return quantize_int8(weight, getattr(cfg, "int8_bits", 8), name=name, allow_nonfinite=allow)
        method = cfg.method if cfg.method not in DATA_AWARE else "mse"
        return quantize_int4_data_free(
            weight, cfg.group_size, cfg.symmetric, method, name=name, allow_nonfinite=allow
        )

    def record(self, weight, qt: QuantizedTensor, cfg: QuantizeConfig, tied: list[str]) -> dict:
        """What the pass records about one quantized weight (Artifact.changes), whoever ran it."""
        from compress.passes.quantize.rtn import sqnr_db

        if isinstance(cfg, Float16Config):
            return FLOAT16.record(weight, qt, cfg, tied)
        method = "rtn" if qt.scheme == "int8" else (cfg.method if cfg.method not in DATA_AWARE else "mse")
        return {**qt.meta(), "method": method, "sqnr_db": sqnr_db(weight, qt.dequantize()), "tied": tied}


ENCODER = WeightEncoder()


def apply(module, cfg: QuantizeConfig, ctx: PassContext) -> PassResult:
    """Replace each targeted layer with its quantized form, in place."""
    from compress.layers import select_module_layers
    from compress.memory import peak_rss_mb
    from compress.qmodules import module_kind, refuse_encoded

    if isinstance(cfg, Float16Config):
        return apply_float16(module, cfg, ctx)
    if isinstance(cfg, NncfConfig):
        raise BadInput(
            "quantize.backend nncf: writes an ONNX graph, not a torch model, so it runs only as a "
            "recipe's single pass from a checkpoint file, not on a model in memory or after another pass."
        )
    started = time.perf_counter()
    groups = select_module_layers(module, cfg.targets, "quantize")
    refuse_encoded(module, groups)
    cfg.check_layers([n for names in groups for n in names])
    plans = {}
    for names in groups:
        weight = module.get_submodule(names[0]).weight
        table = any(module_kind(module.get_submodule(n)) == "embedding" for n in names)
        scheme = ENCODER.plan(names, tuple(weight.shape), cfg, "embedding" if table else None)
        plans[names[0]] = {"scheme": scheme, "shape": list(weight.shape)}
    changes: dict[str, dict] = {}
    stats: dict[str, float] = {}
    ranges = (
        _calibrate_activations(module, cfg, ctx, groups)
        if cfg.uses_data() and isinstance(cfg, Int8Config)
        else []
    )
    if isinstance(cfg, GptqConfig | AwqConfig):
        from compress.passes.quantize.apply_blocks import quantize_blockwise

        done, stats = quantize_blockwise(module, cfg, ctx, groups, plans, changes)
        groups = [names for names in groups if names[0] not in done]
    if ctx.weights is not None and groups:
        ctx.weights.load(*[n for names in groups for n in names])
    _quantize_each(module, cfg, groups, plans, changes, ctx.progress)
    if isinstance(cfg, Int8Config):
        _attach_activation_parts(module, cfg, ranges, changes)
    stats["quantize.seconds"] = time.perf_counter() - started
    peak = peak_rss_mb()
    if peak is not None:
        stats["quantize.peak_rss_mb"] = peak
    return PassResult(module=module, changes=changes, stats=stats)


def _quantize_each(module, cfg: QuantizeConfig, groups, plans, changes, progress) -> None:
    """Data-free quantization of each group's weight (all of them, or those the blocks did not reach)."""
    from compress.model import replace_module
    from compress.qmodules import QuantLinear, quantized_module, set_activation_mode

    if not groups:
        return
    if progress:
        progress.start("quantizing", total=len(groups))
    for names in groups:
        weight = module.get_submodule(names[0]).weight.detach()
        qt = ENCODER.encode(weight, cfg, plans[names[0]]["scheme"], name=f"{names[0]}.weight")
        for name in names:
            replace_module(module, name, quantized_module(module.get_submodule(name), qt))
            layer = module.get_submodule(name)
            if (
                isinstance(cfg, Int8Config)
                and cfg.activations == "dynamic"
                and isinstance(layer, QuantLinear)
            ):
                set_activation_mode(layer, "dynamic")  # only Linear layers have integer kernels
        changes[f"{names[0]}.weight"] = ENCODER.record(weight, qt, cfg, names[1:])
        if progress:
            progress.advance()
    if progress:
        progress.done()


def _calibrate_activations(module, cfg: Int8Config, ctx: PassContext, groups) -> list:
    """Measure the Linear layers' input ranges on the calibration data and smooth their weights."""
    from torch import nn

    from compress.calibration import CalibrationData
    from compress.passes.quantize.activation_ranges import (
        AUTO,
        correct_biases,
        measure_input_ranges,
        smooth_weights,
    )

    if not isinstance(ctx.data, CalibrationData) or len(ctx.data) == 0:
        raise BadInput("quantize: static activations and smoothing need calibration data (none was given).")
    if ctx.weights is not None:
        ctx.weights.load()  # the calibration forward runs the whole model
    # Every Linear reader, also one tied to an embedding (a tied lm_head is not its group's first name).
    linear = [n for names in groups for n in names if isinstance(module.get_submodule(n), nn.Linear)]
    alpha = cfg.smooth_alpha
    keep_rows = alpha == AUTO or cfg.corrects_bias
    ranges = measure_input_ranges(module, linear, ctx.data, ctx.progress, keep_rows=keep_rows)
    tied = {n for names in groups if len(names) > 1 for n in names}  # one weight, several readers
    if alpha is not None:
        smooth_weights(module, ranges, alpha, tied, bits=cfg.int8_bits)
    if cfg.corrects_bias:
        correct_biases(module, ranges, tied, bits=cfg.int8_bits)
    for rng in ranges:
        rng.rows = None  # the samples were only needed for the search and the correction
    return ranges


def _attach_activation_parts(module, cfg: Int8Config, ranges: list, changes: dict) -> None:
    """Store each quantized layer's smoothing factors and static range, and record them."""
    from compress.passes.quantize.activation_ranges import activation_parts, smoothing_alphas
    from compress.qmodules import QuantLinear, set_activation_mode

    alphas = smoothing_alphas(ranges)
    for name, parts in activation_parts(ranges, cfg.activations == "static").items():
        layer = module.get_submodule(name)
        if not isinstance(layer, QuantLinear):
            continue  # a layer left in float reads its input as it is
        layer.set_activation_parts(**parts)
        set_activation_mode(layer, cfg.activations)
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
    summary="INT8 (per channel; weights, or weights and activations) or INT4 (group-wise: rtn, mse, hqq, "
    "gptq, awq) quantization; or NNCF's; or BF16/FP16 weights and compute",
    stream=ENCODER,
    deferred=True,
)
