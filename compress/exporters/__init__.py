"""Export steps: the compressed checkpoint written in a form that a runtime or a serving stack loads.

A recipe's `export:` section lists them (`{format: onnx}`, `{format: openvino}`, ...); `compress
quantize --export FORMAT` adds one. Each runs on the output folder after compress's own checkpoint
is written there, inside the same atomic write, so a failed export leaves nothing behind.

An exporter is an `ExporterSpec`: its settings class (an `ExportConfig`), a `check` that refuses a
combination of passes it cannot hold before any work starts, and `export(folder, cfg, progress)`,
which reads the checkpoint in `folder` and writes its files beside it (or in a subfolder named
after its format), returning the paths it wrote. Built-in exporters are listed in BUILTIN and
imported only when used; plug-ins add theirs through the `compress.exporters` entry point group.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import import_module
from pathlib import Path
from typing import Any, ClassVar

from compress.config import Settings, suggest
from compress.errors import BadInput

ENTRY_POINT_GROUP = "compress.exporters"
BUILTIN = {
    "onnx": "compress.exporters.onnx:EXPORTER",
    "compressed-tensors": "compress.exporters.compressed_tensors:EXPORTER",
    "openvino": "compress.exporters.openvino:EXPORTER",
}


@dataclass(frozen=True, kw_only=True)
class ExportConfig(Settings):
    """Base of an export step's settings; `format` names the exporter (written first in YAML)."""

    format: ClassVar[str] = ""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, where: str = ""):
        data = dict(data or {})
        data.pop("format", None)
        return super().from_dict(data, where or f"export ({cls.format})")

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        return {"format": self.format, **out}

    def describe(self) -> str:
        settings = ", ".join(f"{f.name} {getattr(self, f.name)}" for f in dataclasses.fields(self))
        return self.format + (f" ({settings})" if settings else "")


@dataclass(frozen=True)
class ExporterSpec:
    """How to run one export format."""

    format: str
    config: type[ExportConfig]
    # (folder holding model.safetensors and its side files, settings, progress) -> paths written
    export: Callable[[Path, Any, Any], list[Path]]
    summary: str
    # (the recipe's pass settings, the export settings) -> None, or BadInput for a combination the
    # format cannot hold (checked before any pass runs)
    check: Callable[[list[Any], Any], None] | None = None
    requires: tuple[str, ...] = ()  # packages the exporter imports (listed by `compress passes`)


@cache
def _discover() -> dict[str, str | ExporterSpec]:
    from importlib.metadata import entry_points

    found: dict[str, str | ExporterSpec] = dict(BUILTIN)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name, ep.value)
    return found


def available_formats() -> list[str]:
    return sorted(_discover())


def get_exporter(fmt: str) -> ExporterSpec:
    found = _discover()
    if fmt not in found:
        formats = sorted(found)
        raise BadInput(
            f"unknown export format '{fmt}'{suggest(fmt, formats)}; valid formats: {', '.join(formats)}."
        )
    target = found[fmt]
    if isinstance(target, ExporterSpec):
        return target
    module, _, attr = target.partition(":")
    try:
        spec = getattr(import_module(module), attr)
    except Exception as exc:  # a broken plug-in must not break compress
        raise BadInput(f"export format '{fmt}' is installed but failed to load: {exc}.") from None
    if not isinstance(spec, ExporterSpec):
        raise BadInput(f"export format '{fmt}': {target} is not a compress.exporters.ExporterSpec.")
    return spec


def export_config_from_dict(data: Any, where: str = "export") -> ExportConfig:
    """An export step's settings from a mapping with a `format` key (as in a recipe)."""
    if isinstance(data, str):
        data = {"format": data}
    if not isinstance(data, Mapping) or "format" not in data:
        raise BadInput(
            f"{where}: an export step is a mapping with a 'format' ({', '.join(available_formats())})."
        )
    spec = get_exporter(str(data["format"]))
    return spec.config.from_dict(data, where)


def run_exports(folder: Path, steps: list[ExportConfig], progress=None) -> list[Path]:
    """Run each export step on the checkpoint in `folder`; the paths written, in order."""
    written: list[Path] = []
    for cfg in steps:
        spec = get_exporter(cfg.format)
        if progress:
            progress.start(f"exporting to {cfg.describe()}", total=None)
        written += spec.export(folder, cfg, progress)
        if progress:
            progress.done()
    return written
