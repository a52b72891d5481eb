"""Scheme bf16 / fp16: each targeted weight rounded to 16 bits, its layer computing in 16 bits.

Data-free and weight by weight, so a checkpoint streams through `FLOAT16` (the encoder the quantize
pass's WeightEncoder hands Float16Config to) without being built as a model, and a model in memory
goes through `apply_float16`; both store the same items and records. Only the targeted layers'
weights change: biases and norms are a fraction of a percent of the bytes and stay as they were
(compress.precision runs the norms as float32 islands).
"""

from __future__ import annotations

import time

from compress.formats.float16 import Float16Tensor
from compress.passes.quantize.config import Float16Config
from compress.registry import PassContext, PassResult


class Float16Encoder:
    """The streaming encoder of Float16Config (see compress.registry.PassSpec.stream)."""

    def can_stream(self, cfg) -> bool:
        return isinstance(cfg, Float16Config)

    def check(self, names: list[str], cfg: Float16Config) -> None:
        """Nothing to check across layers: every targeted weight is rounded the same way."""

    def plan(self, names: list[str], shape: tuple[int, ...], cfg: Float16Config) -> str:
        return cfg.scheme

    def encode(self, weight, cfg: Float16Config, scheme: str, name: str | None = None) -> Float16Tensor:
        """NaN/Inf weights are refused with `name` (see compress.finite), or saturated with
        `cfg.allow_nonfinite`; fp16 also refuses a weight beyond its range."""
        from compress.finite import check_finite

        return Float16Tensor.encode(check_finite(name, weight, cfg.allow_nonfinite), scheme, name)

    def record(self, weight, ft: Float16Tensor, cfg: Float16Config, tied: list[str]) -> dict:
        """What the pass records about one weight (Artifact.changes), whoever ran it."""
        from compress.passes.quantize.rtn import sqnr_db

        return {**ft.meta(), "method": "rtn", "sqnr_db": sqnr_db(weight, ft.dequantize()), "tied": tied}


FLOAT16 = Float16Encoder()


def apply_float16(module, cfg: Float16Config, ctx: PassContext) -> PassResult:
    """Replace each targeted layer by its 16-bit form, in place, and run the rest around them."""
    from compress.layers import select_module_layers
    from compress.memory import peak_rss_mb
    from compress.model import replace_module
    from compress.precision import float_islands
    from compress.qmodules import quantized_module, refuse_encoded

    started = time.perf_counter()
    groups = select_module_layers(module, cfg.targets, "quantize")
    refuse_encoded(module, groups)
    if ctx.weights is not None and groups:
        ctx.weights.load(*[n for names in groups for n in names])
    progress = ctx.progress
    if progress:
        progress.start(f"rounding to {cfg.scheme}", total=len(groups))
    changes: dict[str, dict] = {}
    for names in groups:
        weight = module.get_submodule(names[0]).weight.detach()
        ft = FLOAT16.encode(weight, cfg, cfg.scheme, f"{names[0]}.weight")
        for name in names:
            replace_module(module, name, quantized_module(module.get_submodule(name), ft))
        changes[f"{names[0]}.weight"] = FLOAT16.record(weight, ft, cfg, names[1:])
        if progress:
            progress.advance()
    if progress:
        progress.done()
    float_islands(module)
    stats = {"quantize.seconds": time.perf_counter() - started}
    if (peak := peak_rss_mb()) is not None:
        stats["quantize.peak_rss_mb"] = peak
    return PassResult(module=module, changes=changes, stats=stats)
