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
  `input_zero`) covering the (smoothed) input's min and max, as ONNX Runtime's and NNCF's MinMax
  calibration. Shrinking the range to the least error was tried and measured worse on MiniLM
  (embedding cosine 0.959 judged on the input's error, 0.971 on the layers' output error, against
  0.978 for min-max): BERT's outlier channels carry the signal, clipping them costs more than the
  coarser step.
A layer whose weight is tied to another tensor (an output head sharing the embedding) is not
smoothed: scaling its columns would change the other user of the weight.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

MIN_FACTOR = 1e-5


@dataclass
class InputRange:
    """The per-channel range of one tensor that Linear layers read."""

    layers: list[str]
    channel_min: torch.Tensor
    channel_max: torch.Tensor
    smooth: torch.Tensor | None = None  # 1/s per channel, once smoothing is decided


def measure_input_ranges(module, layer_names: list[str], data, progress=None) -> list[InputRange]:
    """Run the calibration samples through `module` and group the layers by the tensor they read."""
    from compress.statistics import run_hooked

    lows: dict[str, torch.Tensor] = {}
    highs: dict[str, torch.Tensor] = {}
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
    run_hooked(module, data.batches(8), hooks, progress, "calibrating activations", next_batch)
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
    """Asymmetric uint8 scale and zero point covering the (smoothed) input's min and max (and 0)."""
    low, high = rng.channel_min, rng.channel_max
    if rng.smooth is not None:
        low, high = low * rng.smooth, high * rng.smooth
    low = torch.clamp(low.min(), max=0.0)
    high = torch.clamp(high.max(), min=0.0)
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
