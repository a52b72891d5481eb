"""Apply a tensor-by-tensor pass to a checkpoint on disk without building the model.

Peak memory stays near a few copies of the largest tensor: the reader does plain reads (no memory
map), the writer declares every output tensor up front and then streams the bytes.
"""

from __future__ import annotations

from pathlib import Path

from compress._version import __version__
from compress.artifact import Artifact, check_output_folder, write_side_files
from compress.checkpoint import (
    SafetensorsFile,
    StreamingWriter,
    atomic_output_dir,
    dtype_code,
    sha256_file,
    torch_dtype,
)
from compress.config import PassConfig
from compress.errors import BadInput
from compress.formats import CODECS, FORMAT_VERSION, CompressionInfo, read_compression_info
from compress.layers import select_checkpoint_tensors
from compress.model import WEIGHTS_NAME
from compress.registry import PassSpec


def stream_checkpoint(
    source: Path, spec: PassSpec, cfg: PassConfig, out_dir: Path, progress=None
) -> Artifact:
    from compress.passes.quantize.rtn import sqnr_db

    check_output_folder(out_dir, source)
    file = SafetensorsFile(source)
    if read_compression_info(file.metadata, str(source)) is not None:
        raise BadInput(f"{source}: is already compressed by compress; start from the float checkpoint.")
    selected = select_checkpoint_tensors(file, cfg.targets, spec.kind)
    if hasattr(spec.stream, "check"):  # settings that must match some selected tensor (mixed precision)
        spec.stream.check(list(selected), cfg)
    # Plan every output tensor before reading any data: the header is written first.
    plan: list[tuple[str, list[tuple[str, str, tuple[int, ...]]], dict | None]] = []
    encoded_meta: dict[str, dict] = {}
    for name, info in file.tensors.items():
        if name in selected and info.is_float:
            dtype = torch_dtype(info.dtype)
            meta = spec.stream.plan(name, info.shape, dtype, cfg)
            parts = [(n, dtype_code(d), s) for n, d, s in CODECS[meta["scheme"]].planned_parts(name, meta)]
            encoded_meta[name] = meta
            plan.append((name, parts, meta))
        else:
            plan.append((name, [(name, info.dtype, info.shape)], None))
    if progress:
        progress.start(f"hashing {source.name}", total=None)
    digest = sha256_file(source)
    recipe = [cfg.to_dict()]
    info = CompressionInfo(FORMAT_VERSION, __version__, digest, recipe, encoded_meta)
    changes: dict[str, dict] = {}
    with atomic_output_dir(out_dir) as stage:
        writer = StreamingWriter(stage / WEIGHTS_NAME, info.to_metadata())
        for _, parts, _ in plan:
            for part_name, code, shape in parts:
                writer.declare(part_name, code, shape)
        if progress:
            progress.start(f"{spec.kind} {source.name}", total=len(plan))
        for name, _, meta in plan:
            tensor = file.read(name)
            if meta is None:
                writer.write(name, tensor)
            else:
                encoded = spec.stream.encode(tensor, cfg, meta)
                for part_name, value in encoded.parts(name).items():
                    writer.write(part_name, value)
                changes[name] = {**meta, "sqnr_db": sqnr_db(tensor, encoded.dequantize())}
                del encoded
            del tensor
            if progress:
                progress.advance()
        writer.close()
        write_side_files(stage, source.parent, None)
    if progress:
        progress.done()
    return Artifact(
        model=None,
        recipe=recipe,
        changes=changes,
        source=source,
        source_sha256=digest,
        path=out_dir / WEIGHTS_NAME,
    )
