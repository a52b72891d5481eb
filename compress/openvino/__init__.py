"""OpenVINO support: compile compress's models the way compress measures them, run them as torch-like
modules, and write them as IR folders.

`core` (is OpenVINO here, compile faithfully, which precision each matrix product runs in), `module`
(OvModule: a compiled model called like a torch module, for the accuracy tasks) and `ir` (a model as
an ov.Model through compress's own ONNX graph, checked against torch, saved as an IR folder).
openvino itself is imported inside the functions that need it.
"""

from __future__ import annotations

from compress.openvino.core import check_device, compile_model, integer_kernels, precisions, require
from compress.openvino.ir import IR_DIR, IR_NAME, convert_module, export_ir, ir_path, refusal

__all__ = [
    "IR_DIR",
    "IR_NAME",
    "check_device",
    "compile_model",
    "convert_module",
    "export_ir",
    "integer_kernels",
    "ir_path",
    "precisions",
    "refusal",
    "require",
]
