"""ONNX Runtime support: export a torch module, check the export against torch, open sessions.

Three small steps that other code combines: `export_onnx` (module + named sample inputs -> a
folder holding model.onnx), `check_export` (ONNX Runtime outputs against torch on samples of other
shapes; a mismatch is refused with the numbers) and `open_session` (providers and threads).
A pass that builds its own ONNX graph (integer kernels) skips the first step and hands its file
to the other two; `supplied_onnx` finds such a file beside a checkpoint.
"""

from __future__ import annotations

from compress.onnx.check import ExportCheck, check_export
from compress.onnx.export import OnnxExport, export_onnx, named_inputs, supplied_onnx
from compress.onnx.session import open_session, provider_for, session_feeds

__all__ = [
    "ExportCheck",
    "OnnxExport",
    "check_export",
    "export_onnx",
    "named_inputs",
    "open_session",
    "provider_for",
    "session_feeds",
    "supplied_onnx",
]
