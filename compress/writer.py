"""The one writer of compress's outputs.

Every producer hands over the same record: the header (`CompressionInfo`: recipe, source, stats,
resized tensors) and the weights as items. A model in memory (`artifact.module_items`), a checkpoint
quantized tensor by tensor (`streaming.stream_items`) and another tool's graph (`backends.nncf`)
differ only in where the items come from. `write_output` writes the folder atomically: the weights,
the files the model needs beside them (config, tokenizer), extra text files, and the files of the
export steps; a failure at any point leaves nothing behind.

An item is (weight name, stored parts, metadata): one plain tensor with metadata None, or an encoded
weight's parts (codes, scales, zero points) with its metadata. Items come in name order, so the same
weights give the same bytes whoever produced them. `CheckpointWriter` stores each as it arrives,
sparsely when most of it is exact zeros (a decision made on content), holding one item in memory,
and writes the header last: the data goes to a scratch file first and is copied in behind it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from compress.checkpoint import atomic_output_dir, dtype_code, header_bytes, tensor_bytes
from compress.errors import BadInput
from compress.formats import CompressionInfo
from compress.model import SIDE_FILES, WEIGHTS_NAME

Item = tuple[str, dict[str, Any], "dict | None"]
INTERNAL_FILES = ("step.json",)  # a cache entry's record, never copied into an output
RECIPE_FILE = "recipe.yaml"  # the resolved recipe, saved inside every output folder


class CheckpointWriter:
    """A safetensors file written item by item, header last (see the module docstring)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._scratch = self.path.with_name(f".{self.path.name}.data.partial")
        self._data = self._scratch.open("wb")
        self._entries: list[tuple[str, str, tuple[int, ...]]] = []
        self.encoded: dict[str, dict] = {}

    def add(self, name: str, parts: dict[str, Any], meta: dict | None) -> None:
        from compress.formats.sparse import sparsify_state

        stored, encoded = sparsify_state(parts, {name: meta} if meta is not None else {})
        self.encoded.update(encoded)
        for part, tensor in stored.items():
            self._entries.append((part, dtype_code(tensor.dtype), tuple(int(d) for d in tensor.shape)))
            self._data.write(tensor_bytes(tensor))

    def close(self, info: CompressionInfo) -> CompressionInfo:
        """Write the header (with the encoded weights' metadata) and the data; the header as written."""
        info.tensors = dict(sorted(self.encoded.items()))
        self._data.close()
        try:
            with self.path.open("wb") as out, self._scratch.open("rb") as data:
                out.write(header_bytes(self._entries, info.to_metadata()))
                shutil.copyfileobj(data, out, 16 * 1024 * 1024)
                out.flush()
                os.fsync(out.fileno())
        finally:
            self._scratch.unlink(missing_ok=True)
        return info

    def abort(self) -> None:
        self._data.close()
        self._scratch.unlink(missing_ok=True)


def write_checkpoint(path: Path, items: Iterable[Item], info: CompressionInfo) -> CompressionInfo:
    """Store `items` (in the order given) with `info` as the header; returns the header written."""
    writer = CheckpointWriter(path)
    try:
        for name, parts, meta in items:
            writer.add(name, parts, meta)
    except BaseException:
        writer.abort()
        raise
    return writer.close(info)


def write_output(
    out: Path,
    info: CompressionInfo,
    *,
    items: Iterable[Item] | None = None,
    write_weights: Callable[[Path, CompressionInfo], Path] | None = None,
    source_folder: Path | None = None,
    config: Any | None = None,
    extra: dict[str, str] | None = None,
    exports: list[Any] = (),  # type: ignore[assignment]
    progress=None,
) -> Path:
    """Write an output folder atomically and return its weights file.

    The weights are `items` (a safetensors checkpoint) or, for a producer that writes another form
    (an ONNX graph), `write_weights(stage, info)`, which returns the file it wrote.
    """
    from compress.exporters import run_exports

    with atomic_output_dir(out) as stage:
        if write_weights is not None:
            weights = write_weights(stage, info)
        else:
            weights = stage / WEIGHTS_NAME
            write_checkpoint(weights, items or [], info)
        write_side_files(stage, source_folder, config)
        for name, text in (extra or {}).items():
            (stage / name).write_text(text)
        run_exports(stage, list(exports), progress)
    return out / weights.name


def copy_output(
    weights: Path, out: Path, *, extra: dict[str, str] | None = None, exports: list[Any] = (), progress=None
) -> Path:  # type: ignore[assignment]
    """Write an output folder from a result already on disk (the folder holding `weights`): its files
    hard-linked (else copied), then the extra files and the export steps; atomically."""
    from compress.exporters import run_exports

    folder = weights.parent
    if out.resolve() == folder.resolve():
        return weights
    with atomic_output_dir(out) as stage:
        for item in sorted(folder.rglob("*")):
            if item.is_dir() or item.name in INTERNAL_FILES:
                continue
            target = stage / item.relative_to(folder)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(item, target)
            except OSError:  # another file system, or links not allowed
                shutil.copy2(item, target)
        for name, text in (extra or {}).items():
            (stage / name).write_text(text)
        run_exports(stage, list(exports), progress)
    return out / weights.name


def write_side_files(stage: Path, source_folder: Path | None, config: Any | None) -> None:
    """Copy the files a model needs (config, tokenizer) beside the weights; a rewritten config wins."""
    import json

    if source_folder is not None:
        for name in SIDE_FILES:
            src = source_folder / name
            if src.is_file():
                (stage / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, stage / name)
    if config is not None:
        (stage / "config.json").write_text(json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n")


def check_output_folder(out: Path, source: Path | None) -> None:
    """Refuse an output folder that would overwrite the input checkpoint."""
    if source is None:
        return
    out_r, src_r = out.resolve(), source.resolve()
    if out_r == src_r or out_r == src_r.parent:
        raise BadInput(f"{out}: is the input's own folder; choose another output folder with -o.")
