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

from compress.errors import BadInput
from compress.formats.float16 import Float16Tensor
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

# scheme -> codec class with from_parts / part_names / planned_parts (see QuantizedTensor).
# Other encodings add themselves here.
CODECS: dict[str, Any] = {
    "int8": QuantizedTensor,
    "int4": QuantizedTensor,
    "bf16": Float16Tensor,
    "fp16": Float16Tensor,
    "sparse": SparseCodec,
}


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
    """Parse compress's header keys; None for an ordinary (uncompressed) checkpoint."""
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
    for name, meta in info.tensors.items():
        if meta.get("scheme") not in CODECS:
            raise BadInput(f"{where}: tensor '{name}' uses an unknown encoding '{meta.get('scheme')}'.")
    return info


def decode(tensors: dict, info: CompressionInfo | None) -> dict:
    """Group stored parts back into encoded weights; plain tensors pass through."""
    if info is None:
        return dict(tensors)
    out = dict(tensors)
    for name, meta in info.tensors.items():
        codec = CODECS[meta["scheme"]]
        names = codec.part_names(name, meta)
        missing = [n for n in names if n not in out]
        if missing:
            raise BadInput(f"checkpoint lacks the stored parts {missing} of encoded weight '{name}'.")
        parts = {n: out.pop(n) for n in names}
        out[name] = codec.from_parts(name, parts, meta)
    return out
