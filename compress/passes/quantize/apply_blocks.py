"""The data-aware methods on a model: calibration batches through the blocks, GPTQ or AWQ per block.

Layers that no block holds (an untied output head, say) or that share their weight with another
layer (tied embeddings) get the data-free MSE clipping afterwards; each layer's record in the
result says which method produced it.
"""

from __future__ import annotations

from torch import nn

from compress.calibration import CalibrationData
from compress.errors import BadInput
from compress.finite import check_finite
from compress.passes.quantize.blockwise import quantize_block
from compress.passes.quantize.config import AwqConfig, GptqConfig

# Calibration batches hold about this many tokens (samples of one length are stacked).
TOKENS_PER_BATCH = 4096


def quantize_blockwise(
    module, cfg: GptqConfig | AwqConfig, ctx, groups: list[list[str]], plans: dict, changes: dict
):
    """Quantize the targeted Linear layers inside the model's blocks; returns (names done, stats)."""
    from compress.model import replace_module
    from compress.qmodules import quantized_module
    from compress.sequential import run_blocks

    data = ctx.data
    if not isinstance(data, CalibrationData) or len(data) == 0:
        raise BadInput(f"quantize: method {cfg.method} needs calibration data (none was given).")
    single = {names[0] for names in groups if len(names) == 1}
    done: set[str] = set()
    fold_hints: dict = {}

    def process(block_name: str, block, inputs) -> None:
        prefix = f"{block_name}." if block_name else ""
        mine = {
            name[len(prefix) :]: plans[name]["scheme"]
            for name in single
            if name.startswith(prefix) and isinstance(module.get_submodule(name), nn.Linear)
        }
        if not mine:
            return
        for rel in mine:  # before any statistics: one NaN/Inf would spread through the block's codes
            weight = block.get_submodule(rel).weight
            weight.data = check_finite(f"{prefix}{rel}.weight", weight.data, cfg.allow_nonfinite)
        for rel, layer in quantize_block(block, inputs, mine, cfg, fold_hints).items():
            full = prefix + rel
            replace_module(module, full, quantized_module(module.get_submodule(full), layer.tensor))
            changes[f"{full}.weight"] = {
                **layer.tensor.meta(),
                "method": layer.method,
                "sqnr_db": layer.sqnr_db,
                "tied": [],
                **layer.details,
            }
            done.add(full)

    seq_len = data.seq_len or 1
    batches = data.batches(max(1, TOKENS_PER_BATCH // seq_len))
    run_blocks(
        module,
        batches,
        process,
        source=data.source,
        weights=ctx.weights,
        progress=ctx.progress,
        description=f"{cfg.method}: blocks",
    )
    tokens = sum(_tokens(sample) for sample in data.samples)
    stats = {"quantize.calibration_samples": float(len(data)), "quantize.calibration_tokens": float(tokens)}
    return done, stats


def _tokens(sample) -> int:
    first = next(iter(sample.values())) if isinstance(sample, dict) else sample
    return int(first.shape[0] * first.shape[1]) if first.dim() >= 2 else int(first.numel())
