"""The record of a model that exists only as an ONNX graph (a backend's output).

The record is compress's usual checkpoint header (recipe, source sha256, stats; see
compress.formats) stored as the graph's metadata_props, plus `compress.backend`: which tool made
the graph, its version and the call. compress.model loads such a folder as a `Model` whose module
runs the graph through ONNX Runtime (OrtModule), so accuracy tasks score it as they score torch
models; the evaluator times it on the onnxruntime runtime only (there is no torch module to time).
"""

from __future__ import annotations

import json
from pathlib import Path

from compress.errors import BadInput
from compress.formats import CompressionInfo, read_compression_info

ONNX_NAME = "model.onnx"
KEY_BACKEND = "compress.backend"


def stamp(graph, info: CompressionInfo, backend: dict) -> None:
    """Write compress's record into an onnx ModelProto's metadata_props (replacing older entries)."""
    entries = {**info.to_metadata(), KEY_BACKEND: json.dumps(backend, sort_keys=True)}
    kept = [p for p in graph.metadata_props if p.key not in entries]
    del graph.metadata_props[:]
    graph.metadata_props.extend(kept)
    for key, value in entries.items():
        graph.metadata_props.add(key=key, value=value)


def read_record(path: Path) -> tuple[CompressionInfo | None, dict | None]:
    """compress's record in a graph's metadata (None, None for a graph made elsewhere)."""
    import onnx

    try:
        graph = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise BadInput(f"{path}: is not a readable ONNX file ({exc}).") from None
    meta = {p.key: p.value for p in graph.metadata_props}
    info = read_compression_info(meta, str(path))
    try:
        backend = json.loads(meta[KEY_BACKEND]) if KEY_BACKEND in meta else None
    except json.JSONDecodeError:
        raise BadInput(f"{path}: has a corrupt '{KEY_BACKEND}' entry in its metadata.") from None
    return info, backend
