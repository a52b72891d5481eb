"""The ONNX exporter: `model.onnx` beside the checkpoint, built on its own integers.

Quantized Linear layers become integer kernels (INT8 with quantized activations: MatMulIntegerToFloat
or QDQ pairs; INT4: MatMulNBits; see compress.onnx.integer); a float model (pruned, distilled) is
exported as it is, an fp16 one as a float16 graph (bf16 is refused: compress.onnx.float16). The
graph is checked against the torch module before it is kept.
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
    a weight-only INT8 pass on Linear layers, or the layers an INT4 pass keeps at INT8 (INT8
    embedding tables are fine: their codes are gathered, then rescaled); and bf16 (no bfloat16 ONNX
    graph can be written or run here; compress.onnx.float16)."""
    for p in passes:
        if p.kind != "quantize":
            continue
        if getattr(p, "scheme", None) == "bf16":
            from compress.onnx.float16 import BF16_REASON

            raise BadInput(f"export onnx with scheme bf16: {BF16_REASON}.")
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
    from compress.checkpoint import SafetensorsFile
    from compress.formats import read_compression_info
    from compress.model import resolve_checkpoint
    from compress.onnx.integer import export_quantized_folder
    from compress.precision import stored_precision

    weights = resolve_checkpoint(folder)
    if stored_precision(read_compression_info(SafetensorsFile(weights).metadata, str(weights))):
        graph = export_float16_folder(folder)  # an fp16 graph; bf16 is refused with the reason
    else:
        graph, _ = export_quantized_folder(folder, form=cfg.quant_format)
    return [graph.path]


def export_float16_folder(folder: Path):
    """Write `folder/model.onnx` for the 16-bit checkpoint in `folder` (fp16: a float16 graph; bf16:
    Unsupported with the reason) and check it against torch on CPU."""
    from compress.errors import Unavailable, Unsupported
    from compress.model import load
    from compress.onnx.check import check_export
    from compress.onnx.export import ONNX_NAME, export_onnx
    from compress.onnx.float16 import graph_check_cosine
    from compress.onnx.samples import export_samples

    model = load(folder)
    if not model.runnable:
        raise Unsupported(f"{folder}: has no config.json, so there is no model to export to ONNX.")
    try:
        min_cosine = graph_check_cosine(model.module)
    except Unavailable as exc:
        raise Unsupported(f"export onnx: {exc}.") from None
    sample, checks = export_samples(None)(model)
    graph = export_onnx(model.module, sample, Path(folder))
    try:
        check_export(graph.path, model.module, [sample, *checks], min_cosine=min_cosine)
    except Exception:
        for path in Path(folder).glob(ONNX_NAME + "*"):
            path.unlink(missing_ok=True)
        raise
    return graph


EXPORTER = ExporterSpec(
    format="onnx",
    config=OnnxExportConfig,
    export=export,
    summary="model.onnx with integer kernels (MatMulIntegerToFloat, QDQ, MatMulNBits) or float16, checked "
    "against torch",
    check=check,
)
