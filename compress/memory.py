"""Process memory: the peak resident size, and handing freed memory back to the system."""

from __future__ import annotations

import sys


def peak_rss_mb() -> float | None:
    """The process's peak resident memory so far, in MB (None where the platform does not say).

    On Linux this is VmHWM, the high-water mark of this program's own memory: getrusage's maxrss
    also counts the image the process was forked from (a large parent that started it), which
    survives exec."""
    if sys.platform.startswith("linux"):
        try:
            with open("/proc/self/status") as status:
                for line in status:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) * 1024 / 1e6
        except OSError:
            pass
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1e6 if sys.platform == "darwin" else peak * 1024 / 1e6


def release_free_memory(collect: bool = True) -> None:
    """Ask the C allocator to return freed pages to the system (after a garbage collection, unless
    `collect` is False: a full collection takes about a second with transformers loaded).

    Freed blocks of a few MB stay with glibc rather than going back to the system; a large
    tokenizer (Gemma's 262k entries: ~0.35 GB) or one block's weights and statistics after another
    would otherwise add up in the process's resident size."""
    if collect:
        import gc

        gc.collect()
    if sys.platform.startswith("linux"):
        import contextlib
        import ctypes

        with contextlib.suppress(OSError, AttributeError):  # not glibc (musl): nothing to trim
            ctypes.CDLL("libc.so.6").malloc_trim(0)
