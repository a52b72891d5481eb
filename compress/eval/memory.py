"""Peak memory of one call: process RSS (Linux high-water mark, reset before the call) and CUDA.

Both models of a comparison live in one process, so the peak RSS includes both; `call` (the peak
minus the resident set just before the call, after freed heap memory is handed back to the OS) is
the memory the call itself took: activations, workspaces, weights dequantized on the fly. Pools an
allocator keeps between calls (ONNX Runtime's arena) are in the peak, not in `call`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_mb(key: str) -> float | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        return None
    return None


def _trim_heap() -> None:
    """Return freed heap memory to the OS (glibc), so the next call's allocations show in RSS."""
    import ctypes
    import ctypes.util

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)


def _reset_peak_rss() -> bool:
    _trim_heap()
    try:
        _CLEAR_REFS.write_text("5")  # Linux >= 4.0: resets VmHWM to the current RSS
        return True
    except OSError:
        return False


def rss_during(fn: Callable[[], object]) -> dict:
    """{'peak_rss_mb', 'call_rss_mb'} of one call of `fn`; None values where the OS cannot tell."""
    if not _reset_peak_rss():
        fn()
        return {"peak_rss_mb": None, "call_rss_mb": None}
    before = _status_mb("VmRSS")
    fn()
    peak = _status_mb("VmHWM")
    return {
        "peak_rss_mb": peak,
        "call_rss_mb": peak - before if peak is not None and before is not None else None,
    }


def cuda_during(fn: Callable[[], object]) -> dict:
    """{'cuda_max_allocated_mb'}: torch's CUDA allocator peak during one call of `fn`."""
    import torch

    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return {"cuda_max_allocated_mb": torch.cuda.max_memory_allocated() / 2**20}
