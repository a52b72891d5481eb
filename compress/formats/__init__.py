"""The compressed checkpoint format: a plain safetensors file plus header metadata.

Header keys (all strings, as safetensors requires):
  compress.format_version   "1"
  compress.tool_version     the compress version that wrote the file
  compress.source_sha256    sha256 of the input checkpoint
  compress.recipe           JSON: the passes that produced the file, with their settings
  compress.tensors          JSON: {weight name: {"scheme", "shape", "dtype", ...}} for every encoded weight
  compress.resized          JSON: {tensor name: shape} for tensors a structural pass (pruning) made
                            smaller than the architecture builds them; written only when there are some
  compress.stats            JSON (optional): what producing the file measured, e.g. quantize.seconds,
                            quantize.peak_rss_mb, quantize.calibration_tokens

Any tensor not listed in compress.tensors is stored as is. Encoded weights are stored as several
tensors (codes, scales, ...) named after the weight; each scheme's codec knows which.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from compress.errors import BadInput, quoted
from compress.formats.checks import is_count
from compress.formats.quantized import QuantizedTensor
from compress.formats.sparse import SparseCodec

FORMAT_VERSION = 1
KEY_FORMAT = "compress.format_version"
KEY_TOOL = "compress.tool_version"
KEY_SOURCE = "compress.source_sha256"
KEY_RECIPE = "compress.recipe"
KEY_TENSORS = "compress.tensors"
KEY_RESIZED = "compress.resized"
KEY_STATS = "compress.stats"

# scheme -> codec class with check_meta / from_parts / part_names / planned_parts (see QuantizedTensor).
# Other encodings add themselves here.
CODECS: dict[str, Any] = {"int8": QuantizedTensor, "int4": QuantizedTensor, "sparse": SparseCodec}
# Suffixes of the stored parts any codec writes beside a weight's name.
PART_SUFFIXES = ("_scale", "_zero", "_mask")


@dataclass
class CompressionInfo:
    """What a compressed checkpoint's header says about how it was made."""

    format_version: int
    tool_version: str
    source_sha256: str
    recipe: list[dict] = field(default_factory=list)
    tensors: dict[str, dict] = field(default_factory=dict)
    # Structurally pruned tensors: name -> shape; the loader shrinks these before loading.
    resized: dict[str, list[int]] = field(default_factory=dict)
    stats: dict[str, float] = field(default_factory=dict)

    def to_metadata(self) -> dict[str, str]:
        meta = {
            KEY_FORMAT: str(self.format_version),
            KEY_TOOL: self.tool_version,
            KEY_SOURCE: self.source_sha256,
            KEY_RECIPE: json.dumps(self.recipe, sort_keys=True),
            KEY_TENSORS: json.dumps(self.tensors, sort_keys=True),
        }
        if self.resized:
            meta[KEY_RESIZED] = json.dumps(self.resized, sort_keys=True)
        if self.stats:
            meta[KEY_STATS] = json.dumps(self.stats, sort_keys=True)
        return meta


def read_compression_info(metadata: dict[str, str], where: str) -> CompressionInfo | None:
    """Parse compress's header keys; None for an ordinary (uncompressed) checkpoint.

    Every entry is checked for its structure here (BadInput naming the tensor), so a hand-edited
    header is refused on load rather than crashing later; `decode` checks the stored parts against it.
    """
    if KEY_FORMAT not in metadata:
        return None
    try:
        version = int(metadata[KEY_FORMAT])
        info = CompressionInfo(
            format_version=version,
            tool_version=metadata.get(KEY_TOOL, "unknown"),
            source_sha256=metadata.get(KEY_SOURCE, ""),
            recipe=json.loads(metadata.get(KEY_RECIPE, "[]")),
            tensors=json.loads(metadata.get(KEY_TENSORS, "{}")),
            resized=json.loads(metadata.get(KEY_RESIZED, "{}")),
            stats=json.loads(metadata.get(KEY_STATS, "{}")),
        )
    except (ValueError, json.JSONDecodeError):
        raise BadInput(f"{where}: has corrupt compress metadata in its header.") from None
    if version > FORMAT_VERSION:
        raise BadInput(
            f"{where}: was written in compress format {version}; this compress reads up to format "
            f"{FORMAT_VERSION} (upgrade compress)."
        )
    _check_structure(info, where)
    for name, meta in info.tensors.items():
        if not isinstance(meta, dict):
            raise BadInput(f"{where}: the compress metadata of tensor {quoted(name)} is not a mapping.")
        if meta.get("scheme") not in CODECS:
            raise BadInput(
                f"{where}: tensor {quoted(name)} uses an unknown encoding {quoted(str(meta.get('scheme')))}."
            )
        CODECS[meta["scheme"]].check_meta(name, meta, where)
    return info


def _check_structure(info: CompressionInfo, where: str) -> None:
    def valid_shape(value: object) -> bool:
        return isinstance(value, list) and all(is_count(d) for d in value)

    checks = (
        (KEY_RECIPE, isinstance(info.recipe, list) and all(isinstance(p, dict) for p in info.recipe)),
        (KEY_TENSORS, isinstance(info.tensors, dict)),
        (KEY_RESIZED, isinstance(info.resized, dict) and all(map(valid_shape, info.resized.values()))),
        (KEY_STATS, isinstance(info.stats, dict)),
    )
    for key, ok in checks:
        if not ok:
            raise BadInput(f"{where}: has corrupt compress metadata in its header ({key}).")


def decode(tensors: dict, info: CompressionInfo | None, where: str = "checkpoint") -> dict:
    """Group stored parts back into encoded weights; plain tensors pass through.

    BadInput naming the weight when a part is missing, left over, or of another dtype or shape than
    the weight's metadata says.
    """
    if info is None:
        return dict(tensors)
    out = dict(tensors)
    for name, meta in info.tensors.items():
        codec = CODECS[meta["scheme"]]
        names = codec.part_names(name, meta)
        missing = [n for n in names if n not in out]
        if missing:
            raise BadInput(
                f"{where}: lacks the stored parts {missing} of encoded weight {quoted(name)} (its metadata "
                f"says {meta['scheme']}; corrupt or edited metadata)."
            )
        extra = [f"{name}{s}" for s in PART_SUFFIXES if f"{name}{s}" in out and f"{name}{s}" not in names]
        if extra:
            raise BadInput(
                f"{where}: holds {extra} beside encoded weight {quoted(name)}, which its metadata "
                f"({meta['scheme']}) does not use (corrupt or edited metadata)."
            )
        parts = {n: out.pop(n) for n in names}
        out[name] = codec.from_parts(name, parts, meta, where)
    return out
