"""Artifact: a compressed model with the recipe and per-layer changes that produced it, and its saving."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compress._version import __version__
from compress.checkpoint import atomic_output_dir, save_tensors
from compress.errors import BadInput
from compress.formats import FORMAT_VERSION, CompressionInfo
from compress.model import SIDE_FILES, WEIGHTS_NAME, Model


@dataclass
class Artifact:
    """The result of applying passes. `model` is in memory; `path` is set once saved.

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

    def save(self, out_dir: str | Path, extra: dict[str, str] | None = None) -> Path:
        """Write `model.safetensors` (and the model's side files) into `out_dir`, atomically.

        `extra`: more text files to write beside them, by name (a report, a recipe).
        """
        if self.model is None or self.model.module is None:
            raise BadInput("this artifact has no in-memory model to save.")
        out = Path(out_dir)
        check_output_folder(out, self.source)
        tensors, encoded = export_state(self.model.module)
        resized = {
            name: list(encoded[name]["shape"] if name in encoded else tensors[name].shape)
            for name in sorted(self.resized)
            if name in tensors
        }
        info = CompressionInfo(
            FORMAT_VERSION, __version__, self.source_sha256, self.recipe, encoded, resized, self.stats
        )
        with atomic_output_dir(out) as stage:
            save_tensors(stage / WEIGHTS_NAME, tensors, info.to_metadata())
            write_side_files(stage, self.source.parent if self.source else None, self.config)
            for name, text in (extra or {}).items():
                (stage / name).write_text(text)
        self.path = out / WEIGHTS_NAME
        return self.path


def check_output_folder(out: Path, source: Path | None) -> None:
    """Refuse an output folder that would overwrite the input checkpoint."""
    if source is None:
        return
    out_r, src_r = out.resolve(), source.resolve()
    if out_r == src_r or out_r == src_r.parent:
        raise BadInput(f"{out}: is the input's own folder; choose another output folder with -o.")


def write_side_files(stage: Path, source_folder: Path | None, config: Any | None) -> None:
    """Copy the files a model needs (config, tokenizer) beside the weights; a rewritten config wins."""
    if source_folder is not None:
        for name in SIDE_FILES:
            src = source_folder / name
            if src.is_file():
                (stage / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, stage / name)
    if config is not None:
        (stage / "config.json").write_text(json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n")


def export_state(module) -> tuple[dict, dict[str, dict]]:
    """The tensors to store for a module, tied tensors once, and the metadata of each encoded weight.

    Weights that are mostly exact zeros (pruned) are stored as a bitmask plus the kept values.
    """
    from compress.formats.sparse import sparsify_state
    from compress.qmodules import _QuantizedWeight

    encoded = {
        f"{n}.weight": m.qweight.meta() for n, m in module.named_modules() if isinstance(m, _QuantizedWeight)
    }
    tensors: dict = {}
    seen: set[tuple] = set()
    for name, t in module.state_dict().items():
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), t.dtype, tuple(t.shape), tuple(t.stride()))
        if t.numel() and key in seen:
            encoded.pop(name, None)  # a tied copy: the loader re-ties it from the architecture
            continue
        seen.add(key)
        tensors[name] = t.detach().contiguous()
    return sparsify_state(tensors, encoded)
