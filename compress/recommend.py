"""What compress recommends for a machine: scheme, activation mode, runtime and format, by ISA class.

The choice comes from TABLE, measured figures only: each ISA class lists its choices best first,
each with the speedup measured for it and where it was measured. A class nobody has measured gets
the conservative choice (INT8 with dynamic activations in ONNX Runtime) marked "not measured". A
choice whose runtime is not importable here is skipped for the next one, and the reason says so.
Refill TABLE from benchmarks/speed.py when it has run on a CPU class (keep the source beside each
figure).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from compress.errors import Unavailable
from compress.hardware import ISA_CLASSES, Hardware


@dataclass(frozen=True)
class Choice:
    scheme: str  # int8 | bf16
    activations: str  # none (weight-only) | dynamic | static
    runtime: str  # openvino | onnxruntime | torch
    format: str  # openvino (IR) | onnx | safetensors (compress's checkpoint)
    weight_bits: int | None  # INT8: 7 where the u8 x s8 kernel saturates (no VNNI), else 8
    speedup: tuple[float, float] | None  # measured (lowest, highest) over `over`; None: not measured
    over: str  # the model the speedup is measured against
    source: str  # where it was measured: model, shape, CPU, file or issue


def _unmeasured(choice: Choice) -> Choice:
    return replace(choice, speedup=None, over="", source="not measured on this class of CPU")


# --- the figures (MiniLM-L6, batch 8 x 128 tokens, unless a source says otherwise) -------------------

# benchmarks/results/speed.md (Intel Xeon with AMX-INT8/BF16 and AVX-512 VNNI, 2 threads, one run,
# every row interleaved): compress static INT8 run by OpenVINO (float parts in bf16), median 3.24x the
# ONNX Runtime float model at batch 8 (3.02x OpenVINO's float model, IQR 2.32-3.33), embedding cosine
# 0.9973, file 0.257; NNCF's static INT8 in OpenVINO in the same run: 3.07x, cosine 0.9944.
# First: the smallest file of the fast choices.
OPENVINO_STATIC_AMX = Choice(
    scheme="int8",
    activations="static",
    runtime="openvino",
    format="openvino",
    weight_bits=8,
    speedup=(2.32, 3.33),
    over="the OpenVINO float model",
    source="MiniLM batch 8 x 128, compress static INT8 in OpenVINO on an Intel AMX CPU (2 threads); "
    "benchmarks/results/speed.md",
)
# Same run: compress bf16 (`--scheme bf16 --export openvino`) in OpenVINO, 3.29x OpenVINO's float model
# (IQR 3.21-3.35), cosine 0.99998; faster still, but its files are half the float file (INT8's: a
# quarter).
OPENVINO_BF16_AMX = Choice(
    scheme="bf16",
    activations="none",
    runtime="openvino",
    format="openvino",
    weight_bits=None,
    speedup=(3.21, 3.35),
    over="the OpenVINO float model",
    source="MiniLM batch 8 x 128, compress bf16 in OpenVINO on an Intel AMX CPU (2 threads); "
    "benchmarks/results/speed.md",
)
# Same run: the model in bfloat16 in torch, 3.32x float torch (IQR 2.97-3.83), cosine 0.99995.
TORCH_BF16_AMX = Choice(
    scheme="bf16",
    activations="none",
    runtime="torch",
    format="safetensors",
    weight_bits=None,
    speedup=(2.97, 3.83),
    over="float torch",
    source="MiniLM batch 8 x 128, bfloat16 in torch on an Intel AMX CPU (2 threads); "
    "benchmarks/results/speed.md",
)
# Same run: compress INT8 dynamic in ONNX Runtime, 1.56x its float model (IQR 1.39-1.73), cosine
# 0.9976; ONNX Runtime's CPU kernels cap there (issue 15 measured 1.45-1.6x on AMX and AVX2 alike).
ORT_DYNAMIC_AMX = Choice(
    scheme="int8",
    activations="dynamic",
    runtime="onnxruntime",
    format="onnx",
    weight_bits=8,
    speedup=(1.39, 1.73),
    over="the ONNX Runtime float model",
    source="MiniLM batch 8 x 128, compress INT8 dynamic in ONNX Runtime on an Intel AMX CPU (2 threads); "
    "benchmarks/results/speed.md",
)
# benchmarks/results/peers.md (an AMD EPYC CPU with AVX2, no VNNI; one thread): compress INT8 dynamic
# (7-bit weights, MatMulIntegerToFloat) 1.41x the float ONNX export, embedding cosine 0.9959.
ORT_DYNAMIC_AVX2 = Choice(
    scheme="int8",
    activations="dynamic",
    runtime="onnxruntime",
    format="onnx",
    weight_bits=7,
    speedup=(1.41, 1.41),
    over="the ONNX Runtime float model",
    source="MiniLM batch 8 x 128, compress INT8 dynamic on an AMD EPYC AVX2 CPU; benchmarks/results/peers.md",
)
# Issue 15: `make demo` (compress quantize model.safetensors: INT8 weight-only in torch) 0.93-1.07x
# float torch: smaller, not faster. The last resort when no faster runtime is usable.
TORCH_WEIGHT_ONLY = Choice(
    scheme="int8",
    activations="none",
    runtime="torch",
    format="safetensors",
    weight_bits=8,
    speedup=(0.93, 1.07),
    over="float torch",
    source="MiniLM, `make demo` (INT8 weight-only in torch) on x86 CPUs; issue 15",
)
# The conservative choice where nothing is measured: INT8 dynamic in ONNX Runtime. 8-bit weights on
# ARM (its int8 dot products do not saturate), 7-bit on x86 without VNNI (vpmaddubsw saturates).
CONSERVATIVE_8 = _unmeasured(replace(ORT_DYNAMIC_AVX2, weight_bits=8))
CONSERVATIVE_7 = _unmeasured(ORT_DYNAMIC_AVX2)

# ISA class -> choices, best first. Edit here when a benchmark measures a class.
TABLE: dict[str, tuple[Choice, ...]] = {
    "amx": (OPENVINO_STATIC_AMX, OPENVINO_BF16_AMX, TORCH_BF16_AMX, ORT_DYNAMIC_AMX, TORCH_WEIGHT_ONLY),
    "avx512-vnni": (CONSERVATIVE_8, _unmeasured(TORCH_WEIGHT_ONLY)),
    "avx-vnni": (CONSERVATIVE_8, _unmeasured(TORCH_WEIGHT_ONLY)),
    "avx512": (CONSERVATIVE_7, _unmeasured(TORCH_WEIGHT_ONLY)),
    "avx2": (ORT_DYNAMIC_AVX2, TORCH_WEIGHT_ONLY),
    "arm-i8mm": (CONSERVATIVE_8, _unmeasured(TORCH_WEIGHT_ONLY)),
    "arm-dotprod": (CONSERVATIVE_8, _unmeasured(TORCH_WEIGHT_ONLY)),
    "arm-neon": (CONSERVATIVE_8, _unmeasured(TORCH_WEIGHT_ONLY)),
    "generic": (CONSERVATIVE_7, _unmeasured(TORCH_WEIGHT_ONLY)),
}

RUNTIME_NAMES = {"openvino": "OpenVINO", "onnxruntime": "ONNX Runtime", "torch": "torch"}
FORMAT_NAMES = {"openvino": "OpenVINO IR", "onnx": "ONNX export", "safetensors": "compress checkpoint"}
# The CPU device each runtime must list for a CPU choice.
CPU_DEVICE = {"openvino": "CPU", "onnxruntime": "CPUExecutionProvider", "torch": "cpu"}


@dataclass(frozen=True)
class Recommendation:
    isa_class: str
    scheme: str
    activations: str
    runtime: str
    format: str
    weight_bits: int | None
    measured: bool
    speedup: tuple[float, float] | None
    source: str
    reason: str  # one paragraph for people: what, the measured figure and where, what was skipped

    def to_dict(self) -> dict[str, Any]:
        return {
            "isa_class": self.isa_class,
            "scheme": self.scheme,
            "activations": self.activations,
            "runtime": self.runtime,
            "format": self.format,
            "weight_bits": self.weight_bits,
            "measured": self.measured,
            "speedup": list(self.speedup) if self.speedup else None,
            "source": self.source,
            "reason": self.reason,
        }


def describe(choice: Choice) -> str:
    bits = f" ({choice.weight_bits}-bit)" if choice.weight_bits == 7 else ""
    what = {
        ("int8", "none"): "INT8 weights only",
        ("int8", "dynamic"): f"INT8 weights{bits} with dynamic INT8 activations",
        ("int8", "static"): f"INT8 weights{bits} with static INT8 activations",
    }.get((choice.scheme, choice.activations), f"{choice.scheme.upper()} weights")
    return f"{what} run by {RUNTIME_NAMES[choice.runtime]} ({FORMAT_NAMES[choice.format]})"


def figure(choice: Choice) -> str:
    low, high = choice.speedup or (0.0, 0.0)
    return f"{low:g}x" if low == high else f"{low:g}-{high:g}x"


def _unusable(hw: Hardware, runtime: str) -> str | None:
    """Why `runtime` cannot run a CPU model here, or None."""
    rt = hw.runtime(runtime)
    if not rt.available:
        return f"{runtime} is unavailable here: {rt.reason}"
    if CPU_DEVICE[runtime] not in rt.devices:
        return f"{runtime} lists no {CPU_DEVICE[runtime]} device ({', '.join(rt.devices) or 'none'})"
    return None


def recommend(hw: Hardware, usable: Callable[[Choice], str | None] | None = None) -> Recommendation:
    """The fastest measured choice for `hw`'s CPU whose runtime is available, with the reason.
    `usable(choice)` may refuse a choice for a reason of its own (the model cannot take it)."""
    isa = hw.isa_class
    skipped: list[str] = []
    for choice in TABLE[isa]:
        why_not = _unusable(hw, choice.runtime) or (usable(choice) if usable else None)
        if why_not is None:
            return _recommendation(hw, choice, skipped)
        if why_not not in skipped:  # two choices on one runtime: say it once
            skipped.append(why_not)
    raise Unavailable(f"No runtime compress can recommend is usable here: {'; '.join(skipped)}.")


def _recommendation(hw: Hardware, choice: Choice, skipped: list[str]) -> Recommendation:
    isa = hw.isa_class
    head = f"This CPU's class is {isa}, {ISA_CLASSES[isa]}: "
    if choice.speedup is None:
        text = f"not measured on this class of CPU; the conservative choice is {describe(choice)}, "
        text += "its speedup here unmeasured."
    else:
        text = f"{describe(choice)}, measured {figure(choice)} over {choice.over} ({choice.source})."
    if skipped:
        text += f" Faster choices were skipped because {'; and '.join(skipped)}."
    if hw.cuda.devices:
        gpu = hw.cuda.devices[0]
        text += (
            f" A CUDA device is present ({gpu.name}, compute capability {gpu.capability}); no GPU choice"
            " is measured yet, so this is the CPU's choice."
        )
    return Recommendation(
        isa_class=isa,
        scheme=choice.scheme,
        activations=choice.activations,
        runtime=choice.runtime,
        format=choice.format,
        weight_bits=choice.weight_bits,
        measured=choice.speedup is not None,
        speedup=choice.speedup,
        source=choice.source,
        reason=head + text,
    )
