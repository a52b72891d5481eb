"""Artifact: a compressed model with the recipe and per-layer changes that produced it.

`Artifact.save(dir)` writes it through the one writer (compress.writer) with the header every
producer writes, and runs the export steps the recipe asked for; `module_items` turns a model in
memory into the writer's items (tied tensors once, in name order).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compress._version import __version__
from compress.errors import BadInput
from compress.formats import CODECS, FORMAT_VERSION, CompressionInfo
from compress.model import Model


@dataclass
class Artifact:
    """The result of applying passes. `model` is in memory (None when the result was written tensor
    by tensor, or by another tool); `path` is set once saved.

    Example:
        >>> art = cz.quantize("model.safetensors", scheme="int4", group_size=32)   # doctest: +SKIP
        >>> art.save("out/int4")                                                   # doctest: +SKIP
    """

    model: Model | None
    recipe: list[dict]
    changes: dict[str, dict] = field(default_factory=dict)
    stats: dict[str, float] = field(default_factory=dict)
    source: Path | None = None
    source_sha256: str = ""
    path: Path | None = None
    config: Any | None = None  # a config rewritten by a pass (pruning); else the source's is copied
    resized: frozenset[str] = frozenset()  # tensors a structural pass shrank (see compress.resize)
    exports: list[Any] = field(default_factory=list)  # export steps (compress.exporters) run on save
    recipe_file: str | None = None  # the resolved recipe (YAML), saved as recipe.yaml beside the weights
    keep: Any = field(default=None, repr=False)  # keeps a temporary folder holding `path` alive

    def info(self) -> CompressionInfo:
        """The header record (the encoded weights' metadata is filled in by the writer)."""
        return CompressionInfo(
            FORMAT_VERSION, __version__, self.source_sha256, self.recipe, {}, {}, dict(self.stats)
        )

    def save(self, out_dir: str | Path, extra: dict[str, str] | None = None, progress=None) -> Path:
        """Write the weights, the model's side files, `recipe.yaml` and the export steps' files into
        `out_dir`, atomically. `extra`: more text files to write beside them, by name.

        A result already on disk (a cache entry, a handed-over graph) is linked or copied; a model
        in memory is written by the one writer.
        """
        from compress.writer import RECIPE_FILE, check_output_folder, copy_output, write_output

        out = Path(out_dir)
        check_output_folder(out, self.source)
        extra = {**({RECIPE_FILE: self.recipe_file} if self.recipe_file else {}), **(extra or {})}
        if self.path is not None and self.path.exists():
            self.path = copy_output(self.path, out, extra=extra, exports=self.exports, progress=progress)
            return self.path
        if self.model is None or self.model.module is None:
            raise BadInput("this artifact has no model in memory and no files to save.")
        module = self.model.module
        info = self.info()
        info.resized = resized_shapes(module, self.resized)
        self.path = write_output(
            out,
            info,
            items=module_items(module),
            source_folder=self.source.parent if self.source else None,
            config=self.config,
            extra=extra,
            exports=self.exports,
            progress=progress,
        )
        return self.path


def module_items(module) -> Iterator[tuple[str, dict, dict | None]]:
    """The writer's items for a module: each encoded weight with its parts, every other tensor as
    it is, a tensor shared by two layers (a tied output head) once, all in name order."""
    from compress.qmodules import _QuantizedWeight

    encoded = {
        f"{n}.weight": stored_meta(m) for n, m in module.named_modules() if isinstance(m, _QuantizedWeight)
    }
    tensors: dict[str, Any] = {}
    seen: set[tuple] = set()
    for name, t in module.state_dict().items():
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), t.dtype, tuple(t.shape), tuple(t.stride()))
        if t.numel() and key in seen:
            encoded.pop(name, None)  # a tied copy: the loader re-ties it from the architecture
            continue
        seen.add(key)
        tensors[name] = t.detach().contiguous()
    parts_of = {name: CODECS[meta["scheme"]].part_names(name, meta) for name, meta in encoded.items()}
    owned = {part for parts in parts_of.values() for part in parts}
    names = sorted([*encoded, *(n for n in tensors if n not in owned)])
    for name in names:
        if name in encoded:
            yield name, {part: tensors[part] for part in parts_of[name]}, encoded[name]
        else:
            yield name, {name: tensors[name]}, None


def stored_meta(layer) -> dict:
    """A quantized layer's header entry: its weight's stored form, and how it rounds its input."""
    meta = layer.qweight.meta()
    mode = getattr(layer, "activations", "none")
    if mode != "none":
        meta["activations"] = mode
    return meta


def export_state(module) -> tuple[dict, dict[str, dict]]:
    """The tensors compress stores for a module and the metadata of each encoded weight (as the
    writer stores them: mostly-zero weights as a bitmask plus the kept values)."""
    from compress.formats.sparse import sparsify_state

    tensors: dict = {}
    encoded: dict[str, dict] = {}
    for name, parts, meta in module_items(module):
        stored, metas = sparsify_state(parts, {name: meta} if meta is not None else {})
        tensors.update(stored)
        encoded.update(metas)
    return tensors, encoded


def resized_shapes(module, resized: frozenset[str]) -> dict[str, list[int]]:
    """The stored shape of each tensor a structural pass shrank (the header's compress.resized)."""
    from compress.qmodules import _QuantizedWeight

    state = module.state_dict()
    shapes = {
        f"{n}.weight": list(m.weight_shape)
        for n, m in module.named_modules()
        if isinstance(m, _QuantizedWeight)
    }
    return {name: shapes.get(name, list(state[name].shape)) for name in sorted(resized) if name in state}
