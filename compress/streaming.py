"""A tensor-by-tensor pass over a checkpoint on disk, without building the model.

The runner picks this road for a data-free pass whose encoder works on one weight at a time (RTN,
MSE, HQQ quantization) when it reads a checkpoint file: peak memory stays near a few copies of the
largest tensor, since the reader does plain reads (no memory map) and the one writer
(compress.writer) takes each item as it is produced. The items, the per-weight records and the
header are the ones the same pass makes on a model in memory, so both roads write the same file.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from compress.artifact import Artifact
from compress.checkpoint import SafetensorsFile, sha256_file
from compress.errors import BadInput
from compress.formats import read_compression_info
from compress.layers import select_checkpoint_tensors
from compress.registry import PassSpec
from compress.writer import check_output_folder


def stream_checkpoint(
    source: Path,
    spec: PassSpec,
    cfg: Any,
    out_dir: Path,
    *,
    recipe: list[dict],
    exports: list[Any] = (),  # type: ignore[assignment]
    extra: dict[str, str] | None = None,
    source_sha256: str | None = None,
    progress=None,
) -> Artifact:
    """Apply a streamable pass to the checkpoint `source` and write the result into `out_dir`."""
    from compress.writer import write_output

    check_output_folder(out_dir, source)
    file = SafetensorsFile(source)
    if read_compression_info(file.metadata, str(source)) is not None:
        raise BadInput(f"{source}: is already compressed by compress; start from the float checkpoint.")
    selected = select_checkpoint_tensors(file, cfg.targets, spec.kind)
    spec.stream.check(list(selected), cfg)
    # Every weight's scheme is checked against its shape before any data is read.
    schemes = {
        name: spec.stream.plan([name], file.tensors[name].shape, cfg)
        for name in selected
        if file.tensors[name].is_float
    }
    if progress:
        progress.start(f"hashing {source.name}", total=None)
    artifact = Artifact(
        model=None,
        recipe=recipe,
        source=source,
        source_sha256=source_sha256 or sha256_file(source),
        exports=list(exports),
    )
    info = artifact.info()
    items = _items(file, spec, cfg, schemes, selected, artifact, info, progress)
    artifact.path = write_output(
        out_dir,
        info,
        items=items,
        source_folder=source.parent,
        extra=extra,
        exports=artifact.exports,
        progress=progress,
    )
    return artifact


def _items(file, spec, cfg, schemes: dict, selected: dict, artifact: Artifact, info, progress) -> Iterator:
    """The writer's items in name order; the header's stats are filled in after the last one."""
    from compress.memory import peak_rss_mb

    started = time.perf_counter()
    if progress:
        progress.start(f"{spec.kind} {file.path.name}", total=len(file.tensors))
    for name in sorted(file.tensors):
        tensor = file.read(name)
        if name not in schemes:
            yield name, {name: tensor}, None
        else:
            encoded = spec.stream.encode(tensor, cfg, schemes[name], name=name)
            artifact.changes[name] = spec.stream.record(tensor, encoded, cfg, [])
            meta = encoded.meta()
            mode = getattr(cfg, "activations", "none")
            if mode == "dynamic" and selected.get(name) == "linear" and meta["scheme"] == "int8":
                meta["activations"] = mode  # as the layer in memory records it (artifact.stored_meta)
            yield name, encoded.parts(name), meta
            del encoded
        del tensor
        if progress:
            progress.advance()
    stats = {f"{spec.kind}.seconds": time.perf_counter() - started}
    if (peak := peak_rss_mb()) is not None:
        stats[f"{spec.kind}.peak_rss_mb"] = peak
    artifact.stats.update(stats)
    info.stats.update(stats)  # the writer writes the header after the last item
    if progress:
        progress.done()
