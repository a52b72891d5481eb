"""What this machine accelerates: the CPU's vector and matrix extensions, its cores and memory, CUDA
devices, and the runtimes that can use them.

Which INT8 or BF16 kernels a CPU has (VNNI, AMX, ARM dot product, I8MM) decides which format and
runtime make a compressed model faster, so the choice (compress.recommend) and every report's
environment read it from here. Parsing is a pure function of /proc/cpuinfo text, so tests feed the
text of CPUs they do not run on; `detect()` reads the real machine once per process. Runtimes are
imported inside functions (`import compress.hardware` stays cheap) and a missing or broken one is
reported as unavailable with the reason, never raised.
"""

from __future__ import annotations

import functools
import importlib
import os
import platform
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

# The ISA features that matter for inference, per architecture family, as /proc/cpuinfo names them.
X86_FEATURES = {
    "avx2": "AVX2",
    "avx512f": "AVX-512",
    "avx512_vnni": "AVX-512 VNNI (INT8 dot products)",
    "avx_vnni": "AVX-VNNI (INT8 dot products, 256-bit)",
    "avx512_bf16": "AVX-512 BF16",
    "avx512_fp16": "AVX-512 FP16",
    "amx_tile": "AMX tiles",
    "amx_int8": "AMX INT8",
    "amx_bf16": "AMX BF16",
}
ARM_FEATURES = {
    "asimd": "NEON (Advanced SIMD)",
    "asimddp": "dot product (SDOT/UDOT)",
    "i8mm": "INT8 matrix multiply (I8MM)",
    "sve": "SVE",
    "sve2": "SVE2",
    "bf16": "BF16",
}

# ISA class -> what it means; the key compress.recommend chooses a format by (strongest first).
ISA_CLASSES = {
    "amx": "Intel AMX (INT8 and BF16 matrix tiles)",
    "avx512-vnni": "AVX-512 VNNI (INT8 dot products)",
    "avx-vnni": "AVX-VNNI (INT8 dot products, 256-bit)",
    "avx512": "AVX-512 without VNNI",
    "avx2": "AVX2 without VNNI",
    "arm-i8mm": "ARM INT8 matrix multiply (I8MM)",
    "arm-dotprod": "ARM dot product (SDOT/UDOT)",
    "arm-neon": "ARM NEON",
    "generic": "no vector extension compress chooses by",
}

# ARM "CPU implementer" codes and a few common "CPU part" codes of implementer 0x41 (ARM), as lscpu
# names them, for CPUs whose /proc/cpuinfo has no "model name" line.
ARM_IMPLEMENTERS = {
    "0x41": "ARM",
    "0x42": "Broadcom",
    "0x43": "Cavium",
    "0x46": "Fujitsu",
    "0x48": "HiSilicon",
    "0x4e": "NVIDIA",
    "0x51": "Qualcomm",
    "0x61": "Apple",
    "0xc0": "Ampere",
}
ARM_PARTS = {
    "0xd03": "Cortex-A53",
    "0xd07": "Cortex-A57",
    "0xd08": "Cortex-A72",
    "0xd0b": "Cortex-A76",
    "0xd0c": "Neoverse-N1",
    "0xd40": "Neoverse-V1",
    "0xd49": "Neoverse-N2",
    "0xd4f": "Neoverse-V2",
    "0xd84": "Neoverse-V3",
    "0xd8e": "Neoverse-N3",
}

RUNTIMES = ("torch", "onnxruntime", "openvino", "nncf")


@dataclass(frozen=True)
class Cpu:
    vendor: str  # GenuineIntel, AuthenticAMD, or the ARM implementer (ARM, Ampere, ...)
    model: str
    arch: str  # x86_64, aarch64, ...
    features: frozenset[str]  # those of X86_FEATURES / ARM_FEATURES this CPU has
    physical_cores: int | None  # usable by this process; None when the system does not say
    logical_cpus: int | None  # usable by this process (its affinity mask)

    @property
    def int8_saturates(self) -> bool:
        """Whether the u8 x s8 integer kernels here add pairs of products in 16 bits and saturate with
        8-bit weights: x86 without VNNI or AMX (vpmaddubsw). VNNI, AMX and ARM's dot products do not."""
        x86 = self.arch in ("x86_64", "i686")
        return x86 and not self.features & {"avx512_vnni", "avx_vnni", "amx_int8"}

    @property
    def isa_class(self) -> str:
        f = self.features
        if self.arch in ("x86_64", "i686"):
            for name, needs in (
                ("amx", "amx_int8"),
                ("avx512-vnni", "avx512_vnni"),
                ("avx-vnni", "avx_vnni"),
                ("avx512", "avx512f"),
                ("avx2", "avx2"),
            ):
                if needs in f:
                    return name
        elif self.arch in ("aarch64", "arm"):
            for name, needs in (("arm-i8mm", "i8mm"), ("arm-dotprod", "asimddp"), ("arm-neon", "asimd")):
                if needs in f:
                    return name
        return "generic"

    def known_features(self) -> dict[str, str]:
        """The features that matter on this architecture: name -> label."""
        if self.arch in ("x86_64", "i686"):
            return X86_FEATURES
        if self.arch in ("aarch64", "arm"):
            return ARM_FEATURES
        return {}


@dataclass(frozen=True)
class Gpu:
    name: str
    capability: str  # CUDA compute capability, "9.0"
    memory_gb: float


@dataclass(frozen=True)
class Cuda:
    devices: tuple[Gpu, ...] = ()
    reason: str | None = None  # why there is none
    version: str | None = None  # the CUDA version torch was built with

    def to_dict(self) -> dict[str, Any]:
        return {
            "available": bool(self.devices),
            "reason": None if self.devices else self.reason,
            "version": self.version,
            "devices": [
                {"name": g.name, "capability": g.capability, "memory_gb": g.memory_gb} for g in self.devices
            ],
        }


@dataclass(frozen=True)
class Runtime:
    name: str
    version: str | None = None
    devices: tuple[str, ...] = ()  # ONNX Runtime's execution providers, OpenVINO's devices, torch's
    reason: str | None = None  # why it is unavailable; None when it is available

    @property
    def available(self) -> bool:
        return self.reason is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "available": self.available,
            "version": self.version,
            "devices": list(self.devices),
            "reason": self.reason,
        }


@dataclass(frozen=True)
class Hardware:
    cpu: Cpu
    memory_gb: float | None = None
    cuda: Cuda = field(default_factory=Cuda)
    runtimes: tuple[Runtime, ...] = ()

    @property
    def isa_class(self) -> str:
        return self.cpu.isa_class

    def runtime(self, name: str) -> Runtime:
        for r in self.runtimes:
            if r.name == name:
                return r
        return Runtime(name, reason="not probed")

    def to_dict(self) -> dict[str, Any]:
        cpu = self.cpu
        return {
            "cpu": {
                "vendor": cpu.vendor,
                "model": cpu.model,
                "arch": cpu.arch,
                "isa_class": cpu.isa_class,
                "features": {name: name in cpu.features for name in cpu.known_features()},
                "physical_cores": cpu.physical_cores,
                "logical_cpus": cpu.logical_cpus,
            },
            "memory_gb": self.memory_gb,
            "cuda": self.cuda.to_dict(),
            "runtimes": {r.name: r.to_dict() for r in self.runtimes},
        }


# --- parsing (pure) ---------------------------------------------------------------------------------


def _blocks(text: str) -> list[dict[str, str]]:
    """/proc/cpuinfo as one dict per blank-line separated block, keys lower-cased."""
    blocks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in [*text.splitlines(), ""]:
        key, sep, value = line.partition(":")
        if not line.strip():
            if current:
                blocks.append(current)
            current = {}
        elif sep:
            current.setdefault(key.strip().lower(), value.strip())
    return blocks


def _normal_arch(machine: str) -> str:
    m = machine.lower()
    return {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64", "i386": "i686"}.get(m, m)


def parse_cpuinfo(
    text: str, machine: str = "", processor: str = "", allowed: Collection[int] | None = None
) -> Cpu:
    """The CPU that /proc/cpuinfo `text` describes. `machine` / `processor` (platform.machine() /
    platform.processor()) are used only where the text says nothing (no /proc, as on macOS);
    `allowed` is the set of CPUs this process may run on (None: all the text lists)."""
    blocks = _blocks(text)
    cpus = [b for b in blocks if b.get("processor", "").isdigit()]
    usable = [b for b in cpus if allowed is None or int(b["processor"]) in allowed]
    first: dict[str, str] = {}
    for b in blocks:  # first value of each key over all blocks (ARM puts some in a trailer block)
        for k, v in b.items():
            first.setdefault(k, v)

    if "flags" in first:
        flags = set(first["flags"].split())
        arch = "x86_64" if "lm" in flags else "i686"
        known = X86_FEATURES
    elif "features" in first:
        flags = set(first["features"].split())
        arch = "aarch64" if "asimd" in flags or first.get("cpu architecture") == "8" else "arm"
        known = ARM_FEATURES
    else:
        flags, arch, known = set(), _normal_arch(machine) or "unknown", {}

    implementer = first.get("cpu implementer", "").lower()
    vendor = first.get("vendor_id") or ARM_IMPLEMENTERS.get(implementer, implementer) or "unknown"
    model = first.get("model name", "")
    if not model and implementer:
        part = first.get("cpu part", "").lower()
        known_part = ARM_PARTS.get(part) if implementer == "0x41" else None  # parts are per implementer
        model = known_part or f"{vendor} CPU part {part or 'unknown'}"
    model = model or processor or machine or "unknown"

    cores = {(b.get("physical id", "0"), b["core id"]) for b in usable if "core id" in b}
    physical = len(cores) if usable and all("core id" in b for b in usable) else None
    return Cpu(
        vendor=vendor,
        model=model,
        arch=arch,
        features=frozenset(flags & set(known)),
        physical_cores=physical,
        logical_cpus=len(usable) or None,
    )


def parse_meminfo(text: str) -> float | None:
    """Total memory in GiB from /proc/meminfo text (None when it has no MemTotal)."""
    for line in text.splitlines():
        if line.startswith("MemTotal:"):
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                return round(int(parts[1]) * 1024 / 2**30, 1)
    return None


# --- probing the real machine ---------------------------------------------------------------------


def _read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def _sysfs_cores(cpus: Collection[int]) -> int | None:
    """Physical cores among `cpus` from sysfs topology, for CPUs whose /proc/cpuinfo has no core ids."""
    root = "/sys/devices/system/cpu"
    pairs = set()
    for n in cpus:
        package = _read(f"{root}/cpu{n}/topology/physical_package_id").strip()
        core = _read(f"{root}/cpu{n}/topology/core_id").strip()
        if not core:
            return None
        pairs.add((package, core))
    return len(pairs) or None


def _version(module: ModuleType, dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return getattr(module, "__version__", None)


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def probe_runtime(name: str, inspect: Callable[[ModuleType], tuple[str, ...]] | None = None) -> Runtime:
    """Import `name` and list its devices with `inspect`; unavailable with the reason on any failure
    (not installed, or a broken install: a missing shared library raises OSError, not ImportError)."""
    try:
        module = importlib.import_module(name)
    except Exception as exc:
        return Runtime(name, reason=f"not importable ({_why(exc)})")
    version = _version(module, name)
    try:
        devices = inspect(module) if inspect else ()
    except Exception as exc:
        return Runtime(
            name, version=version, reason=f"imported, but listing its devices failed ({_why(exc)})"
        )
    return Runtime(name, version=version, devices=tuple(devices))


def _torch_devices(torch: Any) -> tuple[str, ...]:
    return ("cpu", "cuda") if torch.cuda.is_available() else ("cpu",)


def _ort_providers(ort: Any) -> tuple[str, ...]:
    return tuple(ort.get_available_providers())


def _openvino_devices(ov: Any) -> tuple[str, ...]:
    return tuple(ov.Core().available_devices)


INSPECT: dict[str, Callable[[Any], tuple[str, ...]] | None] = {
    "torch": _torch_devices,
    "onnxruntime": _ort_providers,
    "openvino": _openvino_devices,
    "nncf": None,
}


def probe_runtimes() -> tuple[Runtime, ...]:
    return tuple(probe_runtime(name, INSPECT[name]) for name in RUNTIMES)


def probe_cuda() -> Cuda:
    """CUDA devices through torch, or why there are none."""
    try:
        import torch
    except Exception as exc:
        return Cuda(reason=f"torch is not importable ({_why(exc)})")
    built = torch.version.cuda
    if built is None and getattr(torch.version, "hip", None) is None:
        return Cuda(reason=f"torch {torch.__version__} is built without CUDA")
    if not torch.cuda.is_available():
        return Cuda(reason="torch.cuda.is_available() is False (no CUDA device or driver)", version=built)
    gpus = []
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        gpus.append(Gpu(p.name, f"{p.major}.{p.minor}", round(p.total_memory / 2**30, 1)))
    return Cuda(devices=tuple(gpus), version=built)


@functools.cache
def detect() -> Hardware:
    """This machine, probed once per process (reports and the CLI call it often)."""
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    cpu = parse_cpuinfo(_read("/proc/cpuinfo"), platform.machine(), platform.processor(), allowed)
    if cpu.logical_cpus is None:
        cpu = replace(cpu, logical_cpus=len(allowed) if allowed else os.cpu_count())
    if cpu.physical_cores is None and allowed:
        cpu = replace(cpu, physical_cores=_sysfs_cores(allowed))
    return Hardware(
        cpu=cpu,
        memory_gb=parse_meminfo(_read("/proc/meminfo")),
        cuda=probe_cuda(),
        runtimes=probe_runtimes(),
    )
