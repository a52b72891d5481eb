"""Watching the ATen operations a model runs (a TorchDispatchMode), for the analyses that need them:
the dependency analysis of structured pruning and the FLOP counter of the evaluator."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def bind_arguments(func, args: tuple, kwargs: dict) -> dict[str, Any]:
    """An operation's arguments by their schema names, positional or keyword alike, defaults filled in.

    The key "__name__" holds the operation's name without its overload (e.g. "linear").
    """
    bound: dict[str, Any] = {"__name__": func.overloadpacket.__name__}
    for i, arg in enumerate(func._schema.arguments):
        if i < len(args):
            bound[arg.name] = args[i]
        elif arg.name in kwargs:
            bound[arg.name] = kwargs[arg.name]
        elif arg.has_default_value():
            bound[arg.name] = arg.default_value
    return bound


def watching(callback: Callable[[Any, tuple, dict, Any], None]):
    """A context manager that runs `callback(func, args, kwargs, out)` after every ATen operation."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Watching(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            callback(func, args, kwargs, out)
            return out

    return Watching()
