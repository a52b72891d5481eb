"""How much each Linear layer alone costs the model when it is INT4: measured once per model, cached.

For each Linear layer, its weight is rounded to INT4 (groups along the input, round to nearest) while
every other layer stays float, and the model's main output on a few calibration samples is compared
with the float model's: the signal-to-noise ratio of the output in dB (lower: more sensitive). Mixed
precision in a search keeps the N most sensitive layers at higher precision. The ranking depends only
on the model's weights and the measurement settings, so it is cached under the step cache folder,
keyed by the checkpoint's sha256 and the settings.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from compress._version import __version__
from compress.errors import BadInput
from compress.search.space import Measure


def measure(model: Any, settings: Measure, progress: Any = None) -> list[dict[str, Any]]:
    """[{layer, sqnr_db}] for every Linear layer of `model` (a compress Model), most sensitive first.

    A layer whose input width the group size does not divide is listed with sqnr_db None (last).
    """
    import torch

    from compress.calibration import Calibration, draw
    from compress.eval.calls import call_module, main_output

    module = model.module
    if module is None:
        raise BadInput("mixed precision: the model has no architecture to measure layer sensitivity on.")
    calibration = Calibration(data=settings.data, samples=settings.samples, seq_len=settings.seq_len)
    batches = draw(calibration, model.tokenizer).batches(4)
    layers = _linear_layers(module)
    if progress:
        progress.start("layer sensitivity (each Linear layer alone INT4)", total=len(layers))
    rows = []
    with torch.inference_mode():
        reference = [main_output(call_module(module, b)).float() for b in batches]
        for name, linear in layers:
            original = linear.weight.data
            rounded = _int4_roundtrip(original, settings.group_size, settings.symmetric)
            sqnr = None
            if rounded is not None:
                linear.weight.data = rounded
                try:
                    outputs = [main_output(call_module(module, b)).float() for b in batches]
                finally:
                    linear.weight.data = original
                sqnr = _sqnr_db(reference, outputs)
            rows.append({"layer": name, "sqnr_db": sqnr})
            if progress:
                progress.advance()
    if progress:
        progress.done()
    return sorted(rows, key=lambda r: (r["sqnr_db"] is None, r["sqnr_db"] if r["sqnr_db"] is not None else 0))


def ranked(rows: list[dict[str, Any]]) -> tuple[str, ...]:
    """The measured layers' names, most sensitive first."""
    return tuple(r["layer"] for r in rows if r["sqnr_db"] is not None)


def _linear_layers(module) -> list[tuple[str, Any]]:
    """Each Linear layer once (a weight shared by several layers is measured under its first name)."""
    from compress.layers import module_layers

    seen: set[int] = set()
    out = []
    for layer in module_layers(module):
        if layer.type != "linear":
            continue
        linear = module.get_submodule(layer.name)
        if id(linear.weight) in seen:
            continue
        seen.add(id(linear.weight))
        out.append((layer.name, linear))
    return out


def _int4_roundtrip(weight, group_size: int, symmetric: bool):
    """The weight after INT4 round to nearest (as compress stores it), or None when groups do not fit."""
    from compress.passes.quantize.clipping import dequantize_groups
    from compress.passes.quantize.rtn import as_matrix, int4_codes, int4_params

    w2d = as_matrix(weight)
    rows, cols = w2d.shape
    if cols % group_size:
        return None
    groups = w2d.reshape(rows, cols // group_size, group_size)
    scale, zero = int4_params(groups, symmetric)
    approx = dequantize_groups(int4_codes(groups, scale, zero), scale, zero)
    return approx.reshape(weight.shape).to(weight.dtype)


def _sqnr_db(reference: list, outputs: list) -> float:
    signal = sum(r.double().pow(2).sum().item() for r in reference)
    noise = sum(
        (r.double() - o.double()).pow(2).sum().item() for r, o in zip(reference, outputs, strict=True)
    )
    if noise == 0:
        return math.inf
    return 10 * math.log10(signal / noise)


# ---- the cache ----------------------------------------------------------------------------------
def cache_file(cache_root: Path, model_sha256: str, settings: Measure) -> Path:
    from compress.history import canonical_sha256

    key = canonical_sha256({"model": model_sha256, "measure": settings.to_dict(), "compress": __version__})
    return cache_root / "sensitivity" / f"{key}.json"


def read_cached(path: Path) -> list[dict[str, Any]] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    rows = data.get("layers") if isinstance(data, dict) else None
    return rows if isinstance(rows, list) else None


def write(path: Path, rows: list[dict[str, Any]], model_sha256: str, settings: Measure) -> None:
    from compress.checkpoint import atomic_file

    record = {
        "model_sha256": model_sha256,
        "measure": settings.to_dict(),
        "compress": __version__,
        "metric": "SQNR (dB) of the model's main output with this layer alone INT4; lower is more sensitive",
        "layers": rows,
    }
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n")
