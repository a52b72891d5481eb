"""What the measurements ran on: recorded in every report so numbers can be compared honestly."""

from __future__ import annotations

import os
import platform
from importlib import metadata


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_info() -> dict:
    import torch

    if not torch.cuda.is_available():
        return {"available": False, "reason": "torch.cuda.is_available() is False (no CUDA device or driver)"}
    props = torch.cuda.get_device_properties(0)
    return {
        "available": True,
        "name": props.name,
        "memory_gb": round(props.total_memory / 2**30, 1),
        "cuda": torch.version.cuda,
    }


def environment(threads: int | None = None) -> dict:
    import torch

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "threads": threads if threads is not None else torch.get_num_threads(),
        "gpu": gpu_info(),
        "versions": {
            name: _version(name)
            for name in ("compress", "torch", "transformers", "onnx", "onnxruntime", "nncf", "numpy")
        },
    }
