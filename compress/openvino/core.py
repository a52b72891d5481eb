"""OpenVINO itself: whether it is here, compiling a model the way compress measures it, and which
precision each matrix product of a compiled model runs in.

compress compiles with settings that keep OpenVINO's arithmetic the arithmetic of compress's torch
model (FAITHFUL): float32 for everything that is not integer (on CPUs with BF16 support, OpenVINO's
default inference precision is bf16), and no dynamic quantization of activations (by default the CPU
plugin rounds the inputs of a matmul with compressed weights to int8 in groups of 32, which changes
the results of an INT4 or INT8 weight-only model). Integer kernels still run where the graph asks for
them: a static INT8 layer's QuantizeLinear / DequantizeLinear pairs become a u8 x i8 FullyConnected.
"""

from __future__ import annotations

from collections import Counter
from functools import cache
from typing import Any

from compress.errors import Unavailable

FAITHFUL = {"INFERENCE_PRECISION_HINT": "f32", "DYNAMIC_QUANTIZATION_GROUP_SIZE": 0}
# Runtime-graph layer types that multiply matrices: weights (FullyConnected, Convolution) or two
# activations (MatMul, e.g. attention scores).
MATRIX_LAYERS = ("FullyConnected", "MatMul", "Convolution")
DEVICES = {"cpu": "CPU"}


def require():
    """The openvino module; Unavailable (with the reason) when it cannot be imported."""
    try:
        import openvino
    except ImportError as exc:
        raise Unavailable(f"openvino is not installed ({exc}); pip install openvino") from None
    return openvino


@cache
def core():
    return require().Core()


def check_device(device: str) -> str:
    """OpenVINO's name for `device`; Unavailable with the reason when it cannot run there."""
    if device == "cuda":
        raise Unavailable(
            "OpenVINO's GPU plugin runs Intel GPUs, not CUDA devices; OpenVINO runs on the CPU here"
        )
    name = DEVICES.get(device)
    if name is None:
        raise Unavailable(f"OpenVINO has no device for '{device}'")
    available = core().available_devices
    if name not in available:
        raise Unavailable(f"OpenVINO {require().__version__} finds no {name} device (has: {available})")
    return name


def compile_model(model: Any, device: str = "cpu", threads: int | None = None, precision: str = "f32"):
    """`model` (an ov.Model or an IR / ONNX path) compiled for latency on `device` with `threads`
    inference threads (None: OpenVINO's choice), in compress's FAITHFUL settings."""
    config: dict[str, Any] = {
        "PERFORMANCE_HINT": "LATENCY",
        **FAITHFUL,
        "INFERENCE_PRECISION_HINT": precision,
    }
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    if not isinstance(model, require().Model):
        model = str(model)
    return core().compile_model(model, check_device(device), config)


def precisions(compiled) -> dict[str, int]:
    """How many matrix products of a compiled model run in each precision, from OpenVINO's runtime
    graph: 'u8/i8' (uint8 activations times int8 weights: an integer kernel), 'f32/u4' (float
    activations, 4-bit weights decompressed in the kernel), 'f32' (both float)."""
    counts: Counter[str] = Counter()
    for op in compiled.get_runtime_model().get_ops():
        info = op.get_rt_info()
        if "layerType" not in info or info["layerType"].astype(str) not in MATRIX_LAYERS:
            continue
        types = [op.input(i).get_element_type().get_type_name() for i in range(min(2, op.get_input_size()))]
        types = [t for t in types if t != "dynamic"]
        if not types and "runtimePrecision" in info:
            types = [info["runtimePrecision"].astype(str)]
        counts["/".join(types) if len(set(types)) > 1 else (types or ["?"])[0]] += 1
    return dict(sorted(counts.items()))


def integer_kernels(counts: dict[str, int]) -> int:
    """How many of `precisions`' products take integer activations (u8/... or i8/...)."""
    return sum(n for label, n in counts.items() if label.split("/")[0] in ("u8", "i8"))
