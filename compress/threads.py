"""Running many small tensor operations on one thread.

Quantization searches (GPTQ's column loop, clipping and scale searches) are long sequences of
element-wise operations on tensors of a few thousand values. On a CPU shared with other work,
waking a second intra-op thread for each such operation costs more than the operation itself:
measured on 2 busy cores, GPTQ on a 640x2048 layer took 18.5 s with 2 threads and 1.8 s with one.
Large matrix products (block forward passes, Gram matrices) keep the usual thread count.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import TypeVar

F = TypeVar("F", bound=Callable)


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def on_one_thread(fn: F) -> F:
    """Decorator: run `fn` inside single_thread()."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with single_thread():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
