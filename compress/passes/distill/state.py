"""Training checkpoints: one safetensors file holding tensors (weights, optimizer moments, random
state) plus the rest as JSON in its header, written atomically. Nothing is pickled, so a
checkpoint from anywhere is safe to resume from."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from compress.errors import BadInput

STATE_KEY = "compress.training_state"


def save_state(path: Path, state: dict) -> None:
    """Write `state` (nested dicts/lists/tuples of tensors and JSON values) to `path`, atomically."""
    from compress.checkpoint import atomic_file, save_tensors

    tensors: dict = {}
    packed = _pack(state, tensors, "s")
    with atomic_file(path) as tmp:
        save_tensors(tmp, tensors, {STATE_KEY: json.dumps(packed)})


def load_state(path: Path) -> dict:
    from compress.checkpoint import SafetensorsFile

    file = SafetensorsFile(path)
    raw = file.metadata.get(STATE_KEY)
    if raw is None:
        raise BadInput(f"{path}: is not a compress training checkpoint.")
    try:
        packed = json.loads(raw)
    except json.JSONDecodeError:
        raise BadInput(f"{path}: its training state is not valid JSON.") from None
    return _unpack(packed, file.read_all())


def _pack(value: Any, tensors: dict, key: str) -> Any:
    import torch

    if isinstance(value, torch.Tensor):
        tensors[key] = value.detach().cpu().contiguous()
        return {"$tensor": key}
    if isinstance(value, dict):
        return {"$map": [[k, _pack(v, tensors, f"{key}.{k}")] for k, v in value.items()]}
    if isinstance(value, tuple):
        return {"$tuple": [_pack(v, tensors, f"{key}.{i}") for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_pack(v, tensors, f"{key}.{i}") for i, v in enumerate(value)]
    if isinstance(value, float) and not math.isfinite(value):
        return {"$float": str(value)}
    return value


def _unpack(value: Any, tensors: dict) -> Any:
    if isinstance(value, list):
        return [_unpack(v, tensors) for v in value]
    if not isinstance(value, dict):
        return value
    if "$tensor" in value:
        return tensors[value["$tensor"]]
    if "$map" in value:  # keys keep their type (an optimizer's state is keyed by int)
        return {k: _unpack(v, tensors) for k, v in value["$map"]}
    if "$tuple" in value:
        return tuple(_unpack(v, tensors) for v in value["$tuple"])
    if "$float" in value:
        return float(value["$float"])
    raise BadInput("training checkpoint: unknown entry in its state.")
