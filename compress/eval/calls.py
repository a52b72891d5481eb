"""Calling a model with sample inputs and finding its main output tensor, whatever its type."""

from __future__ import annotations

from typing import Any

from compress.errors import BadInput


def call_module(module, inputs: Any):
    """Call with a dict as keyword arguments, a tuple or list as positional ones, else one argument."""
    if isinstance(inputs, dict):
        return module(**inputs)
    if isinstance(inputs, tuple | list):
        return module(*inputs)
    return module(inputs)


def main_output(output):
    """The main tensor of a model's output: logits, last hidden state, or the tensor itself; a
    16-bit one (a bf16 or fp16 model's) widened to float32, so every score is computed in float32."""
    import torch

    if isinstance(output, torch.Tensor):
        return _widened(output)
    for key in ("logits", "last_hidden_state"):
        value = getattr(output, key, None)
        if value is not None:
            return _widened(value)
    if isinstance(output, tuple | list) and output and isinstance(output[0], torch.Tensor):
        return _widened(output[0])
    raise BadInput(f"cannot find an output tensor in a {type(output).__name__}.")


def _widened(tensor):
    import torch

    return tensor.float() if tensor.dtype in (torch.bfloat16, torch.float16) else tensor


def move_inputs(inputs: Any, device: str) -> Any:
    if isinstance(inputs, dict):
        return {k: v.to(device) for k, v in inputs.items()}
    if isinstance(inputs, tuple | list):
        return type(inputs)(v.to(device) for v in inputs)
    return inputs.to(device)


def batch_size_of(inputs: Any) -> int | None:
    first = (
        next(iter(inputs.values()))
        if isinstance(inputs, dict)
        else (inputs[0] if isinstance(inputs, tuple | list) else inputs)
    )
    return int(first.shape[0]) if hasattr(first, "shape") and first.dim() else None
