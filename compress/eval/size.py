"""Size on disk, parameter counts, bits per weight, and the per-tensor error of encoded weights."""

from __future__ import annotations

import math
from pathlib import Path

from compress.checkpoint import SafetensorsFile
from compress.formats import CODECS, decode, read_compression_info
from compress.model import Model


def parameter_count(file: SafetensorsFile) -> int:
    """Logical number of stored values: an encoded weight counts as its original shape."""
    info = read_compression_info(file.metadata, str(file.path))
    encoded = info.tensors if info else {}
    parts = {p for name, meta in encoded.items() for p in CODECS[meta["scheme"]].part_names(name, meta)}
    count = sum(math.prod(meta["shape"]) for meta in encoded.values())
    count += sum(t.numel for n, t in file.tensors.items() if n not in parts)
    return count


def module_bytes(module) -> tuple[int, int]:
    """(bytes, parameter count) of a module's tensors as compress would store them."""
    from compress.artifact import export_state

    tensors, encoded = export_state(module)
    nbytes = sum(t.numel() * t.element_size() for t in tensors.values())
    parts = {p for name, meta in encoded.items() for p in CODECS[meta["scheme"]].part_names(name, meta)}
    count = sum(math.prod(m["shape"]) for m in encoded.values())
    count += sum(t.numel() for n, t in tensors.items() if n not in parts)
    return nbytes, count


def size_section(candidate: Model, baseline: Model) -> dict:
    cand_bytes, cand_params, where = _bytes_and_params(candidate)
    base_bytes, base_params, _ = _bytes_and_params(baseline)
    return {
        "bytes": cand_bytes,
        "baseline_bytes": base_bytes,
        "ratio": cand_bytes / base_bytes if base_bytes else None,
        "parameters": cand_params,
        "baseline_parameters": base_params,
        # An ONNX-only candidate stores the baseline's weights in another form: count those.
        "bits_per_weight": 8 * cand_bytes / (cand_params or base_params) if base_params else None,
        "baseline_bits_per_weight": 8 * base_bytes / base_params if base_params else None,
        "measured": where,
    }


def _bytes_and_params(model: Model) -> tuple[int, int | None, str]:
    if model.onnx_only:  # a backend's graph: its files on disk; its logical weight count is unknown
        files = model.checkpoint.parent.glob(model.checkpoint.name + "*")
        return sum(p.stat().st_size for p in files), None, "ONNX graph on disk (model.onnx)"
    if model.checkpoint is not None:
        file = SafetensorsFile(model.checkpoint)
        return model.checkpoint.stat().st_size, parameter_count(file), "file on disk"
    nbytes, count = module_bytes(model.module)
    return nbytes, count, "tensors in memory (not saved)"


def tensor_errors(candidate: Path, baseline: Path) -> list[dict]:
    """SQNR of every encoded weight of `candidate` against the same weight in `baseline`, one at a time."""
    from compress.passes.quantize.rtn import sqnr_db

    cand = SafetensorsFile(candidate)
    base = SafetensorsFile(baseline)
    info = read_compression_info(cand.metadata, str(candidate))
    if info is None:
        return []
    rows = []
    for name, meta in info.tensors.items():
        if name not in base:
            continue
        names = CODECS[meta["scheme"]].part_names(name, meta)
        parts = {n: cand.read(n) for n in names if n in cand}  # decode names any missing one
        encoded = decode(parts, _only(info, name), str(candidate))[name]
        reference = base.read(name)
        if tuple(reference.shape) != tuple(meta["shape"]):
            continue  # reshaped by a structural pass: no like-for-like comparison
        values = encoded.dequantize() if hasattr(encoded, "dequantize") else encoded  # sparse floats
        smooth = name.removesuffix(".weight") + ".input_smooth"
        if smooth in cand:  # SmoothQuant scaled the stored columns: compare what the layer computes,
            values = values * cand.read(smooth).to(values.dtype)  # (x * smooth) @ W.T = x @ (W * smooth).T
        rows.append(
            {
                "name": name,
                "scheme": meta["scheme"],
                "group_size": meta.get("group_size"),
                "sqnr_db": sqnr_db(reference, values),
            }
        )
    return rows


def _only(info, name: str):
    from dataclasses import replace

    return replace(info, tensors={name: info.tensors[name]})
