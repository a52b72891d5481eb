"""What pruning changed, measured: sparsity per layer and overall, nonzero parameters, and FLOPs.

Sparsity of a layer = 1 - (nonzero weights of the candidate's layer) / (weights of the baseline's
layer), so it counts removed rows (structured pruning) and zeros (unstructured) alike. FLOPs are
counted on the latency input, so `ideal_speedup` (baseline FLOPs / candidate FLOPs) is what the
measured speedup can be compared with; zeros that dense kernels still multiply give an ideal of 1.
"""

from __future__ import annotations

from typing import Any

from compress.model import Model

# Rounding alone zeros a percent or two of the weights (INT8 of small values); that is not pruning.
NOTABLE_SPARSITY = 0.05


def weights(model: Model) -> dict[str, Any]:
    """Weight name -> dense weight (dequantized when stored quantized), each shared weight once."""
    from compress.checkpoint import SafetensorsFile
    from compress.formats import decode, read_compression_info

    if model.runnable:
        from compress.layers import weight_groups
        from compress.qmodules import _QuantizedWeight

        out = {}
        for names in weight_groups(model.module).values():
            layer = model.module.get_submodule(names[0])
            dense = layer.qweight.dequantize() if isinstance(layer, _QuantizedWeight) else layer.weight
            out[f"{names[0]}.weight"] = dense.detach()
        return out
    file = SafetensorsFile(model.checkpoint)
    where = str(model.checkpoint)
    decoded = decode(file.read_all(), read_compression_info(file.metadata, where), where)
    return {
        name: value.dequantize() if hasattr(value, "dequantize") else value
        for name, value in decoded.items()
        if (hasattr(value, "dequantize") or value.is_floating_point()) and len(value.shape) >= 2
    }


def sparsity_section(candidate: Model, baseline: Model) -> dict:
    """Overall and per-layer sparsity of the candidate, against the baseline's layer sizes."""
    import torch

    base = {
        name: (w.numel(), int(torch.count_nonzero(w)), list(w.shape)) for name, w in weights(baseline).items()
    }
    layers = []
    for name, w in weights(candidate).items():
        if name not in base:
            continue
        numel, _, shape = base[name]
        if numel == 0:
            continue  # an empty tensor (a zero-size dimension) has no sparsity
        nonzero = int(torch.count_nonzero(w))
        layers.append(
            {
                "name": name,
                "sparsity": 1 - nonzero / numel,
                "nonzero": nonzero,
                "shape": list(w.shape),
                "baseline_shape": shape,
            }
        )
    if not layers:
        return {}
    counted = {layer["name"] for layer in layers}
    total = sum(base[n][0] for n in counted)
    nonzero = sum(layer["nonzero"] for layer in layers)
    base_nonzero = sum(base[n][1] for n in counted)
    return {
        "overall": 1 - nonzero / total,
        "baseline_overall": 1 - base_nonzero / total,
        "nonzero_weights": nonzero,
        "baseline_nonzero_weights": base_nonzero,
        "layers": layers,
    }


def structure_sections(candidate: Model, baseline: Model, settings, inputs: Any) -> tuple[dict, dict]:
    """The report's `sparsity` and `compute` sections."""
    return sparsity_section(candidate, baseline), compute_section(candidate, baseline, settings, inputs)


def compute_section(candidate: Model, baseline: Model, settings, inputs: Any) -> dict:
    """FLOPs of one call of each model on the latency input."""
    from compress.eval.calls import batch_size_of
    from compress.eval.flops import count_flops
    from compress.eval.text import latency_inputs

    if not (candidate.runnable and baseline.runnable) or candidate.onnx_only:
        return {}  # FLOPs are counted on torch ops; an ONNX-only model runs none
    if inputs is not None:
        batch, shape = inputs, {"batch_size": batch_size_of(inputs), "seq_len": None}
    elif baseline.tokenizer is not None:
        batch = latency_inputs(baseline, settings.batch_size, settings.seq_len)
        shape = {"batch_size": settings.batch_size, "seq_len": settings.seq_len}
    else:
        return {}
    cand, base = count_flops(candidate.module, batch), count_flops(baseline.module, batch)
    return {
        "flops": cand,
        "baseline_flops": base,
        "ratio": cand / base if base else None,
        "ideal_speedup": base / cand if cand else None,
        **shape,
        "counted": "2 per multiply-add of matrix products, convolutions and attention",
    }


def annotate_latency(rows: list[dict], compute: dict, sparsity: dict) -> list[str]:
    """Put the ideal speedup beside each measured one; say when zeros cannot bring any."""
    ideal = compute.get("ideal_speedup")
    notes = []
    for row in rows:
        if row.get("status") == "ok" and ideal is not None:
            row["ideal_speedup"] = ideal
    zeros = sparsity.get("overall", 0) - sparsity.get("baseline_overall", 0)
    if ideal is not None and abs(ideal - 1) < 0.01 and zeros > NOTABLE_SPARSITY:
        measured = sorted({f"{r['device']}/{r['runtime']}" for r in rows if r.get("status") == "ok"})
        notes.append(
            f"{zeros:.0%} of the weights are zeros that dense kernels still multiply, so no speedup is "
            f"expected on {', '.join(measured) or 'these runtimes'} (FLOPs unchanged); the gain is the "
            "smaller file. Structured pruning (neurons, heads, channels) removes FLOPs."
        )
    return notes
