"""The OpenVINO exporter: an IR folder (`openvino/openvino_model.xml` + `.bin`, with the config and
tokenizer files beside it) built on the checkpoint's own integers, checked against torch before it
is kept.

- An encoder or classifier (compress.openvino.ir): that `openvino.Core().read_model` loads; static
  INT8 from compress's QDQ graph (u8 x i8 kernels), INT4 as 4-bit compressed weights (the layers it
  keeps at INT8 as 8-bit ones), quantized embeddings as int8 / int4 tables; a float model as float32.
- A causal LM (compress.openvino.llm): a stateful IR (KV cache as state, beam_idx input) with the
  tokenizer converted beside it, which openvino-genai's LLMPipeline loads; INT4 / INT8 weight-only
  layers and embeddings as compressed weights (the stored codes, scales and zero points).
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


def check(passes: list[Any], cfg: OpenVinoExportConfig, family: str | None = None) -> None:
    """Refuse, before any pass runs, what the IR cannot hold: for a causal LM (`family`
    'causal-lm'), quantized activations; for other models, INT8 without static activations (no
    OpenVINO integer kernel for it). An INT4 pass's layers kept at INT8 go as 8-bit compressed weights."""
    from compress.openvino.ir import refusal
    from compress.openvino.llm import llm_refusal

    last = next((p for p in reversed(passes) if p.kind == "quantize"), None)
    if last is None or getattr(last, "backend", "compress") != "compress":
        return
    scheme, activations = getattr(last, "scheme", None), getattr(last, "activations", "none")
    reason = llm_refusal(activations) if family == "causal-lm" else refusal(scheme, activations)
    if reason:
        raise BadInput(reason)


def export(folder: Path, cfg: OpenVinoExportConfig, progress=None) -> list[Path]:
    from compress.model import load
    from compress.onnx.samples import export_samples
    from compress.openvino.ir import IR_DIR, export_ir
    from compress.openvino.llm import export_llm_ir

    model = load(folder)
    if model.family == "causal-lm" and model.runnable and not model.onnx_only:
        return [export_llm_ir(model, Path(folder) / IR_DIR)]
    return [export_ir(folder, export_samples(None), model=model)]


EXPORTER = ExporterSpec(
    format="openvino",
    config=OpenVinoExportConfig,
    export=export,
    summary="OpenVINO IR (openvino/openvino_model.xml) on the stored integers (static INT8: u8 x i8 kernels; "
    "INT4: compressed weights; causal LMs: a stateful IR with the tokenizer, for openvino-genai), "
    "checked against torch",
    check=check,
    requires=("openvino",),
)
