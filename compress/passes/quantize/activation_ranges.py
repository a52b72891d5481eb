"""Calibrated activation settings of INT8 Linear layers: SmoothQuant factors and static ranges.

One pass of the float model over the calibration data records, for the input of every targeted
Linear layer, each channel's min and max (and, when the smoothing strength is searched or the
biases corrected, a sample of the input rows). From them:

- smoothing (SmoothQuant, Xiao et al. 2023): transformer activations carry a few outlier channels
  that make every other channel's 8-bit code coarse. For the layers that read one tensor (q, k and v
  read one; so does each FFN input), s_j = max|x_j|^alpha / max|W[:, j]|^(1 - alpha) over all of
  them; the weights' column j is multiplied by s_j before quantization and the input by 1/s_j at
  run time (stored per layer as `input_smooth`), so the product is unchanged while the activations
  get flatter and the weights take the outliers. Readers of one tensor share one factor, so the
  exported graph quantizes that tensor once. As in NNCF, s is bounded below by its 10% quantile
  over the tensor's channels (a quiet channel's input is not amplified without limit) and above by
  100 (nor a weight column).
- the strength alpha per tensor (`smooth` "auto", the default with static activations): each
  alpha of ALPHA_GRID is tried on the sampled input rows, quantized exactly as the pass will
  (weights W * s to int8 per row with the pass's code width, the input to the static uint8 range
  below), and the one with the least relative output error of the readers is kept: one alpha for
  every layer leaves some inputs worse off than others.
- static ranges: an asymmetric uint8 scale and zero point per layer input (`input_scale`,
  `input_zero`) covering the (smoothed) input's min and max, as ONNX Runtime's and NNCF's MinMax
  calibration. BERT's outlier channels carry the signal: clipping them costs more than the coarser
  step (shrinking the range to the least error measured worse on MiniLM).
- bias correction (the default with static activations; as NNCF's FastBiasCorrection): each
  reader's bias takes the mean shift of its outputs that the rounding causes on the sampled rows,
  so the quantized layer keeps the float layer's mean output (correct_biases).
Measured against NNCF on MiniLM with the same calibration: benchmarks/results/int8_static_accuracy.md.
A layer whose weight is tied to another tensor (an output head sharing the embedding) is neither
smoothed nor bias-corrected: that would change the other user of the weight.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from compress.errors import BadInput

MIN_FACTOR = 1e-5
FLOOR_QUANTILE = 0.1  # factors below this quantile of a tensor's factors are raised to it ...
MAX_FACTOR = 100.0  # ... and none exceeds this (NNCF's SmoothQuant bounds)
AUTO = "auto"  # smoothing strength searched per input tensor
ALPHA_GRID = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95)
SEARCH_ROWS = 4096  # input rows (tokens) sampled per tensor for the search ...
SEARCH_BYTES = 512 * 2**20  # ... fewer when all of them would take more memory than this


@dataclass
class InputRange:
    """The per-channel range of one tensor that Linear layers read."""

    layers: list[str]
    channel_min: torch.Tensor
    channel_max: torch.Tensor
    smooth: torch.Tensor | None = None  # 1/s per channel, once smoothing is decided
    rows: torch.Tensor | None = None  # [n, channels] sample of the input, for the alpha search
    alpha: float | None = None  # the smoothing strength applied


def measure_input_ranges(
    module, layer_names: list[str], data, progress=None, keep_rows: bool = False
) -> list[InputRange]:
    """Run the calibration samples through `module` and group the layers by the tensor they read.
    With `keep_rows`, each tensor also keeps an evenly spaced sample of its rows (see SEARCH_ROWS)."""
    from compress.statistics import run_hooked

    lows: dict[str, torch.Tensor] = {}
    highs: dict[str, torch.Tensor] = {}
    kept: dict[str, list[torch.Tensor]] = {}
    readers: dict[int, list[str]] = {}  # id(input tensor) -> layers, within one forward
    seen: list[Any] = []  # keeps this forward's inputs alive so their ids stay unique
    groups: list[list[str]] | None = None
    batches = data.batches(8)
    per_batch = _rows_per_batch(module, layer_names, len(batches)) if keep_rows else 0

    def hook(name: str):
        def record(_module, args):
            x = args[0].detach()
            flat = x.reshape(-1, x.shape[-1]).float()
            low, high = flat.amin(dim=0), flat.amax(dim=0)
            lows[name] = torch.minimum(lows[name], low) if name in lows else low
            highs[name] = torch.maximum(highs[name], high) if name in highs else high
            first = id(args[0]) not in readers  # the other readers see the same rows
            if per_batch and first:
                picked = torch.linspace(0, len(flat) - 1, min(per_batch, len(flat))).round().long()
                kept.setdefault(name, []).append(flat[picked])
            readers.setdefault(id(args[0]), []).append(name)
            seen.append(args[0])

        return record

    def next_batch() -> None:  # the groups are read off the first batch; ids are per forward
        nonlocal groups
        if groups is None:
            groups = list(readers.values())
        readers.clear()
        seen.clear()

    hooks = [module.get_submodule(n).register_forward_pre_hook(hook(n)) for n in layer_names]
    run_hooked(module, batches, hooks, progress, "calibrating activations", next_batch)
    missing = [n for n in layer_names if n not in lows]
    if missing:
        raise BadInput(
            f"quantize: layer '{missing[0]}' never ran on the calibration data, so its activation range "
            "is unknown; exclude it or use --activations dynamic."
        )
    return [
        InputRange(
            layers=names,
            channel_min=torch.stack([lows[n] for n in names]).amin(dim=0),
            channel_max=torch.stack([highs[n] for n in names]).amax(dim=0),
            rows=torch.cat(kept[names[0]]) if names[0] in kept else None,
        )
        for names in groups or []
    ]


def _rows_per_batch(module, layer_names: list[str], batches: int) -> int:
    """Rows to keep per tensor and batch: SEARCH_ROWS in all, within SEARCH_BYTES for every layer."""
    channels = sum(module.get_submodule(n).weight.shape[1] for n in layer_names)
    total = min(SEARCH_ROWS, SEARCH_BYTES // (4 * max(channels, 1)))
    return max(1, math.ceil(total / max(batches, 1)))


def smoothing_factor(rng: InputRange, weights: list[torch.Tensor], alpha: float) -> torch.Tensor:
    """SmoothQuant's s per input channel for the readers' `weights` at strength `alpha`, kept
    between its FLOOR_QUANTILE quantile and MAX_FACTOR (see the module's docstring)."""
    act = torch.maximum(rng.channel_max.abs(), rng.channel_min.abs()).clamp(min=MIN_FACTOR)
    wmax = torch.stack([w.detach().abs().amax(dim=0).float() for w in weights]).amax(dim=0)
    factor = act.pow(alpha) / wmax.clamp(min=MIN_FACTOR).pow(1 - alpha)
    floor = torch.quantile(factor, FLOOR_QUANTILE)
    return factor.clamp(min=floor, max=MAX_FACTOR).clamp(min=MIN_FACTOR)


def smooth_weights(
    module, ranges: list[InputRange], alpha: float | str, tied: set[str], bits: int = 8
) -> None:
    """Multiply the readers' weight columns by s and set each range's `smooth` to 1/s (in place).
    `alpha` "auto": searched per tensor on its sampled rows with `bits`-bit weights (see
    search_alpha)."""
    for rng in ranges:
        if any(name in tied for name in rng.layers):
            continue
        weights = [module.get_submodule(n).weight for n in rng.layers]
        if alpha == AUTO:
            if rng.rows is None:
                raise ValueError("smooth_weights: alpha 'auto' needs the ranges measured with keep_rows")
            rng.alpha = search_alpha(rng, rng.rows, weights, bits)
        else:
            rng.alpha = float(alpha)
        factor = smoothing_factor(rng, weights, rng.alpha)
        with torch.no_grad():
            for weight in weights:
                weight.mul_(factor.to(weight.dtype)[None, :])
        rng.smooth = 1.0 / factor


def search_alpha(rng: InputRange, rows: torch.Tensor, weights: list[torch.Tensor], bits: int) -> float:
    """The alpha of ALPHA_GRID whose quantized readers reproduce the float outputs on `rows` best
    (least sum over readers of the output's mean squared error relative to its mean square)."""
    from compress.passes.quantize.rtn import quantize_int8
    from compress.qmodules import static_fake_quant

    floats = [w.detach().float() for w in weights]
    refs = [rows @ w.T for w in floats]
    errors: dict[float, float] = {}
    for alpha in ALPHA_GRID:
        factor = smoothing_factor(rng, floats, alpha)
        smooth = 1.0 / factor
        scale, zero = uint8_range(rng.channel_min * smooth, rng.channel_max * smooth)
        codes = static_fake_quant(rows * smooth, scale, zero)
        error = 0.0
        for w, ref in zip(floats, refs, strict=True):
            dequantized = quantize_int8(w * factor[None, :], bits).dequantize(torch.float32)
            got = codes @ dequantized.T
            error += float((ref - got).pow(2).mean() / ref.pow(2).mean().clamp(min=1e-30))
        errors[alpha] = error
    return min(errors, key=errors.__getitem__)


def correct_biases(module, ranges: list[InputRange], tied: set[str], bits: int = 8) -> dict[str, float]:
    """Bias correction (as NNCF's FastBiasCorrection): add to each reader's bias the mean shift of
    its outputs that quantization causes on the sampled rows (input rounded to the static range, the
    smoothed weight to `bits`-bit codes, exactly as the pass will), so the quantized layer's outputs
    keep the float layer's mean. Each layer is corrected in isolation, on float inputs. Layers
    without a bias, tied ones and tensors without sampled rows are left as they are. Returns the
    largest correction relative to the bias's largest magnitude, by layer name (for the records)."""
    from compress.passes.quantize.rtn import quantize_int8
    from compress.qmodules import static_fake_quant

    done: dict[str, float] = {}
    for rng in ranges:
        if rng.rows is None or any(name in tied for name in rng.layers):
            continue
        smooth = rng.smooth if rng.smooth is not None else torch.ones_like(rng.channel_max)
        scale, zero = static_range(rng)
        mean_codes = static_fake_quant(rng.rows * smooth, scale, zero).mean(dim=0)
        for name in rng.layers:
            layer = module.get_submodule(name)
            if layer.bias is None:
                continue
            w = layer.weight.detach().float()  # already multiplied by s where smoothed
            quantized = quantize_int8(w, bits).dequantize(torch.float32)
            shift = (rng.rows * smooth).mean(dim=0) @ w.T - mean_codes @ quantized.T
            with torch.no_grad():
                layer.bias.add_(shift.to(layer.bias.dtype))
            done[name] = float(shift.abs().max() / layer.bias.detach().abs().max().clamp(min=1e-12))
    return done


def uint8_range(channel_min: torch.Tensor, channel_max: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Asymmetric uint8 scale and zero point covering every channel's min and max (and 0)."""
    low = torch.clamp(channel_min.min(), max=0.0)
    high = torch.clamp(channel_max.max(), min=0.0)
    scale = torch.clamp((high - low) / 255.0, min=1e-12)
    zero = torch.clamp(torch.round(-low / scale), 0, 255)
    return scale.reshape(()), zero.reshape(())


def static_range(rng: InputRange) -> tuple[torch.Tensor, torch.Tensor]:
    """Asymmetric uint8 scale and zero point covering the (smoothed) input's min and max (and 0)."""
    low, high = rng.channel_min, rng.channel_max
    if rng.smooth is not None:
        low, high = low * rng.smooth, high * rng.smooth
    return uint8_range(low, high)


def activation_parts(ranges: list[InputRange], static: bool) -> dict[str, dict[str, torch.Tensor]]:
    """The tensors each layer stores (see qmodules.ACTIVATION_PARTS), by layer name."""
    parts: dict[str, dict[str, torch.Tensor]] = {}
    for rng in ranges:
        mine: dict[str, torch.Tensor] = {}
        if rng.smooth is not None:
            mine["input_smooth"] = rng.smooth
        if static:
            mine["input_scale"], mine["input_zero"] = static_range(rng)
        for name in rng.layers:
            parts[name] = mine
    return parts


def smoothing_alphas(ranges: list[InputRange]) -> dict[str, float]:
    """The smoothing strength applied to each layer's input, by layer name (for the pass's records)."""
    return {name: rng.alpha for rng in ranges if rng.alpha is not None for name in rng.layers}
