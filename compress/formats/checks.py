"""Checks the codecs share: the fields of a weight's header entry, and a stored part against the form
its entry plans for it. Each failure is one sentence naming the file and the weight."""

from __future__ import annotations

from typing import Any

from compress.errors import BadInput, quoted

FLOAT_DTYPES = ("float32", "float16", "bfloat16", "float64")
_EDITED = "(corrupt or edited metadata)"


def is_count(value: object) -> bool:
    """A non-negative JSON integer (not a bool, not a float such as 2.0)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def corrupt(where: str, name: str, what: str) -> BadInput:
    return BadInput(f"{where}: the compress metadata of tensor {quoted(name)} {what} {_EDITED}.")


def shape_field(meta: dict, key: str, name: str, where: str, min_dims: int = 0) -> tuple[int, ...]:
    value = meta.get(key)
    if not isinstance(value, list) or len(value) < min_dims or not all(is_count(d) for d in value):
        need = f"a list of at least {min_dims} non-negative integers" if min_dims else "a list of integers"
        raise corrupt(where, name, f"has {key} {value!r}, not {need}")
    return tuple(value)


def dtype_field(meta: dict, key: str, name: str, where: str, allowed: tuple[str, ...]) -> str:
    value = meta.get(key)
    if value not in allowed:
        raise corrupt(where, name, f"has {key} {value!r}, not one of {', '.join(allowed)}")
    return value


def check_part(where: str, name: str, part: str, tensor: Any, dtype: Any, shape: tuple[int, ...]) -> None:
    """BadInput unless the stored `part` of weight `name` has the dtype and shape its metadata plans."""
    if tensor.dtype == dtype and tuple(tensor.shape) == tuple(shape):
        return
    have = f"{str(tensor.dtype).removeprefix('torch.')} {list(tensor.shape)}"
    need = f"{str(dtype).removeprefix('torch.')} {list(shape)}"
    what = f"the stored part {quoted(part)}" if part != name else "the stored values"
    raise BadInput(
        f"{where}: {what} of encoded weight {quoted(name)} is {have}, but its metadata says {need} {_EDITED}."
    )
