"""Calibrated activation settings of INT8 Linear layers: SmoothQuant factors and static ranges.

One pass of the float model over the calibration data records, for the input of every targeted
Linear layer, each channel's min and max. From them:

- smoothing (SmoothQuant, Xiao et al. 2023): transformer activations carry a few outlier channels
  that make every other channel's 8-bit code coarse. For the layers that read one tensor (q, k and v
  read one; so does each FFN input), s_j = max|x_j|^alpha / max|W[:, j]|^(1 - alpha) over all of
  them; the weights' column j is multiplied by s_j before quantization and the input by 1/s_j at
  run time (stored per layer as `input_smooth`), so the product is unchanged while the activations
  get flatter and the weights take the outliers. Readers of one tensor share one factor, so the
  exported graph quantizes that tensor once.
- static ranges: an asymmetric uint8 scale and zero point per layer input (`input_scale`,
  `input_zero`). Min-max ranges are too wide on transformer activations (a rare outlier token
  sets the step of every other token: MiniLM embedding cosine 0.978), so the range is the min-max
  one shrunk by the factor with the least quantization error on a sample of calibration tokens.
A layer whose weight is tied to another tensor (an output head sharing the embedding) is not
smoothed: scaling its columns would change the other user of the weight.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

MIN_FACTOR = 1e-5
ROWS_PER_BATCH = 64  # calibration tokens kept per batch for the static range search
SHRINK = tuple(1.0 - 0.05 * i for i in range(16))  # candidate range factors, 1.0 down to 0.25


@dataclass
class InputRange:
    """The per-channel range of one tensor that Linear layers read."""

    layers: list[str]
    channel_min: torch.Tensor
    channel_max: torch.Tensor
    rows: torch.Tensor | None = None  # a sample of the tensor's token rows [n, channels]
    smooth: torch.Tensor | None = None  # 1/s per channel, once smoothing is decided


def measure_input_ranges(module, layer_names: list[str], data, progress=None) -> list[InputRange]:
    """Run the calibration samples through `module` and group the layers by the tensor they read."""
    from compress.eval.calls import call_module
    from compress.passes.prune.activations import without_cache

    lows: dict[str, torch.Tensor] = {}
    highs: dict[str, torch.Tensor] = {}
    rows: dict[str, list[torch.Tensor]] = {}
    generator = torch.Generator().manual_seed(0)
    readers: dict[int, list[str]] = {}  # id(input tensor) -> layers, within one forward
    seen: list[Any] = []  # keeps this forward's inputs alive so their ids stay unique
    groups: list[list[str]] | None = None

    def hook(name: str):
        def record(_module, args):
            x = args[0].detach()
            flat = x.reshape(-1, x.shape[-1]).float()
            low, high = flat.amin(dim=0), flat.amax(dim=0)
            lows[name] = torch.minimum(lows[name], low) if name in lows else low
            highs[name] = torch.maximum(highs[name], high) if name in highs else high
            if id(args[0]) not in readers:  # one sample per tensor, kept under its first reader
                pick = torch.randperm(flat.shape[0], generator=generator)[:ROWS_PER_BATCH]
                rows.setdefault(name, []).append(flat[pick].clone())
            readers.setdefault(id(args[0]), []).append(name)
            seen.append(args[0])

        return record

    hooks = [module.get_submodule(n).register_forward_pre_hook(hook(n)) for n in layer_names]
    batches = data.batches(8)
    if progress:
        progress.start("calibrating activations", total=len(batches))
    try:
        with torch.inference_mode():
            for batch in batches:
                call_module(module, without_cache(module, batch))
                if groups is None:
                    groups = list(readers.values())
                readers.clear()
                seen.clear()
                if progress:
                    progress.advance()
    finally:
        for handle in hooks:
            handle.remove()
        if progress:
            progress.done()
    missing = [n for n in layer_names if n not in lows]
    if missing:
        from compress.errors import BadInput

        raise BadInput(
            f"quantize: layer '{missing[0]}' never ran on the calibration data, so its activation range "
            "is unknown; exclude it or use --activations dynamic."
        )
    return [
        InputRange(
            layers=names,
            channel_min=torch.stack([lows[n] for n in names]).amin(dim=0),
            channel_max=torch.stack([highs[n] for n in names]).amax(dim=0),
            rows=torch.cat(rows[names[0]]) if names[0] in rows else None,
        )
        for names in groups or []
    ]


def smooth_weights(module, ranges: list[InputRange], alpha: float, tied: set[str]) -> None:
    """Multiply the readers' weight columns by s and set each range's `smooth` to 1/s (in place)."""
    for rng in ranges:
        if any(name in tied for name in rng.layers):
            continue
        act = torch.maximum(rng.channel_max.abs(), rng.channel_min.abs()).clamp(min=MIN_FACTOR)
        weights = [module.get_submodule(n).weight for n in rng.layers]
        wmax = torch.stack([w.detach().abs().amax(dim=0).float() for w in weights]).amax(dim=0)
        factor = (act.pow(alpha) / wmax.clamp(min=MIN_FACTOR).pow(1 - alpha)).clamp(min=MIN_FACTOR)
        with torch.no_grad():
            for weight in weights:
                weight.mul_(factor.to(weight.dtype)[None, :])
        rng.smooth = 1.0 / factor


def static_range(rng: InputRange) -> tuple[torch.Tensor, torch.Tensor]:
    """Asymmetric uint8 scale and zero point of the (smoothed) input: its min-max range (with 0)
    shrunk by the factor in SHRINK with the least squared error on the sampled rows."""
    from compress.qmodules import static_fake_quant

    low, high = rng.channel_min, rng.channel_max
    if rng.smooth is not None:
        low, high = low * rng.smooth, high * rng.smooth
    low = torch.clamp(low.min(), max=0.0)
    high = torch.clamp(high.max(), min=0.0)
    values = None if rng.rows is None else rng.rows * (1 if rng.smooth is None else rng.smooth)
    best = None
    for factor in SHRINK if values is not None else (1.0,):
        scale, zero = _uint8_params(low * factor, high * factor)
        if values is None:
            return scale, zero
        err = float((static_fake_quant(values, scale, zero) - values).pow(2).sum())
        if best is None or err < best[0]:
            best = (err, scale, zero)
    return best[1], best[2]


def _uint8_params(low: torch.Tensor, high: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    scale = torch.clamp((high - low) / 255.0, min=1e-12)
    zero = torch.clamp(torch.round(-low / scale), 0, 255)
    return scale.reshape(()), zero.reshape(())


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
