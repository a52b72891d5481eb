"""The ONNX exporter: `model.onnx` beside the checkpoint, built on its own integers.

Quantized Linear layers become integer kernels (INT8 with quantized activations: MatMulIntegerToFloat
or QDQ pairs; INT4: MatMulNBits; see compress.onnx.integer); a float model (pruned, distilled) is
exported as it is. The graph is checked against the torch module before it is kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from compress.errors import BadInput
from compress.exporters import ExportConfig, ExporterSpec


@dataclass(frozen=True, kw_only=True)
class OnnxExportConfig(ExportConfig):
    """quant_format: static INT8 as integer operators (qoperator) or QuantizeLinear/DequantizeLinear
    pairs around float MatMuls (qdq), for runtimes that fuse them (ONNX Runtime, OpenVINO)."""

    format: ClassVar[str] = "onnx"
    quant_format: Literal["qoperator", "qdq"] = "qoperator"


def check(passes: list[Any], cfg: OnnxExportConfig) -> None:
    """Refuse INT8 weight-only Linear layers (ONNX Runtime has no kernel for them faster than float):
    a weight-only INT8 pass on Linear layers, or the layers an INT4 pass keeps at INT8. INT8
    embedding tables are fine (their codes are gathered, then rescaled)."""
    for p in passes:
        if p.kind != "quantize":
            continue
        targets = getattr(p, "targets", None)
        linear = targets is None or "linear" in targets.types
        if getattr(p, "scheme", None) == "int8" and getattr(p, "activations", "none") == "none" and linear:
            raise BadInput(
                "export onnx with int8 needs activations dynamic or static: weight-only INT8 has no "
                "ONNX Runtime kernel faster than float."
            )
        if getattr(p, "keep_int8", ()):
            raise BadInput(
                "export onnx: the layers an INT4 pass keeps at INT8 (keep_int8) would be weight-only INT8, "
                "which has no ONNX Runtime kernel faster than float."
            )


def export(folder: Path, cfg: OnnxExportConfig, progress=None) -> list[Path]:
    from compress.onnx.integer import export_quantized_folder

    graph, _ = export_quantized_folder(folder, form=cfg.quant_format)
    return [graph.path]


EXPORTER = ExporterSpec(
    format="onnx",
    config=OnnxExportConfig,
    export=export,
    summary="model.onnx with integer kernels (MatMulIntegerToFloat, QDQ, MatMulNBits), checked against torch",
    check=check,
)
