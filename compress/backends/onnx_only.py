"""Models that exist only as an ONNX graph (a backend's output): their record and their loading.

The record is compress's usual checkpoint header (recipe, source sha256, stats; see
compress.formats) stored as the graph's metadata_props, plus `compress.backend`: which tool made
the graph, its version and the call. Loaded, such a folder is a `Model` whose module runs the
graph through ONNX Runtime (OrtModule), so accuracy tasks score it as they score torch models;
the evaluator times it on the onnxruntime runtime only (there is no torch module to time).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from compress.errors import BadInput
from compress.formats import CompressionInfo, read_compression_info

ONNX_NAME = "model.onnx"
KEY_BACKEND = "compress.backend"


def is_onnx_only(source: Any) -> bool:
    """True for a `model.onnx` path, or a folder holding model.onnx and no model.safetensors."""
    from compress.model import WEIGHTS_NAME

    if not isinstance(source, str | Path):
        return False
    path = Path(source)
    if path.is_file():
        return path.suffix == ".onnx"
    return path.is_dir() and (path / ONNX_NAME).is_file() and not (path / WEIGHTS_NAME).exists()


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


def load_onnx_only(source: str | Path, threads: int | None = None):
    """A Model for a folder holding model.onnx with config.json (and the tokenizer) beside it."""
    from compress.model import Model, family_of, load_config, load_tokenizer
    from compress.onnx.module import OrtModule

    path = Path(source)
    graph = path if path.is_file() else path / ONNX_NAME
    config = load_config(graph.parent)
    if config is None:
        raise BadInput(
            f"{graph}: has no config.json beside it; compress evaluates an ONNX graph with the "
            "config and tokenizer of the model it came from."
        )
    info, backend = read_record(graph)
    notes = []
    if backend:
        notes.append(
            f"the candidate is an ONNX graph made by {backend.get('name')} {backend.get('version')} "
            f"({backend.get('call')}); accuracy and latency come from ONNX Runtime"
        )
    try:
        module = OrtModule(graph, threads=threads)
    except Exception as exc:  # onnxruntime's errors carry the reason in their text
        raise BadInput(f"{graph}: ONNX Runtime cannot load this graph ({str(exc).strip()[-300:]}).") from None
    return Model(
        module=module,
        family=family_of(config),
        checkpoint=graph,
        config=config,
        tokenizer=load_tokenizer(graph.parent),
        compression=info,
        notes=notes,
        backend=backend,
    )
