"""What the measurements ran on: recorded in every report so numbers can be compared honestly."""

from __future__ import annotations

import os
import platform
from importlib import metadata

from compress.hardware import Hardware, detect


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def gpu_info(hw: Hardware) -> dict:
    """The first CUDA device, or why there is none (the whole list is under "hardware")."""
    cuda = hw.cuda
    if not cuda.devices:
        return {"available": False, "reason": cuda.reason}
    gpu = cuda.devices[0]
    return {"available": True, "name": gpu.name, "memory_gb": gpu.memory_gb, "cuda": cuda.version}


def environment(threads: int | None = None) -> dict:
    import torch

    hw = detect()
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": hw.cpu.model,
        "cpu_count": os.cpu_count(),
        "threads": threads if threads is not None else torch.get_num_threads(),
        "gpu": gpu_info(hw),
        "versions": {
            name: _version(name)
            for name in (
                "compress",
                "torch",
                "transformers",
                "onnx",
                "onnxruntime",
                "nncf",
                "openvino",
                "numpy",
            )
        },
        "hardware": hw.to_dict(),
    }
