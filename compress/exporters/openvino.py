"""The OpenVINO exporter: an IR folder (`openvino/openvino_model.xml` + `.bin`, with the config and
tokenizer files beside it) that `openvino.Core().read_model` loads, built on the checkpoint's own
integers (compress.openvino.ir): static INT8 from compress's QDQ graph (u8 x i8 kernels), INT4 as
4-bit compressed weights, quantized embeddings as int8 / int4 tables; a float model as float32.
The IR is checked against the torch module before it is kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from compress.errors import BadInput
from compress.exporters import ExportConfig, ExporterSpec


@dataclass(frozen=True, kw_only=True)
class OpenVinoExportConfig(ExportConfig):
    format: ClassVar[str] = "openvino"


def check(passes: list[Any], cfg: OpenVinoExportConfig) -> None:
    """Refuse INT8 without static activations (no OpenVINO integer kernel for it) and mixed INT4 with
    INT8 weight-only layers, before any pass runs."""
    from compress.openvino.ir import refusal

    last = next((p for p in reversed(passes) if p.kind == "quantize"), None)
    if last is None or getattr(last, "backend", "compress") != "compress":
        return
    scheme, activations = getattr(last, "scheme", None), getattr(last, "activations", "none")
    reason = refusal(scheme, activations)
    if reason is None and getattr(last, "keep_int8", ()):
        reason = refusal("int8", "none")
    if reason:
        raise BadInput(reason)


def export(folder: Path, cfg: OpenVinoExportConfig, progress=None) -> list[Path]:
    from compress.onnx.samples import export_samples
    from compress.openvino import export_ir

    return [export_ir(folder, export_samples(None))]


EXPORTER = ExporterSpec(
    format="openvino",
    config=OpenVinoExportConfig,
    export=export,
    summary="OpenVINO IR (openvino/openvino_model.xml) on the stored integers (static INT8: u8 x i8 kernels; "
    "INT4: compressed weights), checked against torch",
    check=check,
    requires=("openvino",),
)
