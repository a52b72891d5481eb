"""Running a model one block at a time on calibration data, for passes that need each layer's inputs.

The repeated blocks of a model (the nn.ModuleList of decoder or encoder layers) are found
generically. One forward pass per calibration batch records what every block is called with: the
first block's hidden state, and each block's other positional and keyword arguments (attention
masks and position embeddings, which can differ from block to block); it stops before any block
runs. Then, block by block, the caller collects statistics and changes the block, and the block is
run again on its inputs to give the next block its inputs. Only the current block's inputs and
outputs are held, so memory stays near the model plus one block's activations.

A model without repeated blocks (a small MLP or CNN) is one block: the whole model at once.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from compress.errors import BadInput
from compress.memory import release_free_memory

# Keyword arguments that carry a generation cache: calibration runs without one.
_CACHE_KWARGS = ("past_key_values", "past_key_value", "layer_past")


@dataclass
class Call:
    """How a block is called for one batch; the hidden state goes at `hidden_at` (index or keyword)."""

    args: tuple
    kwargs: dict
    hidden_at: int | str

    def with_hidden(self, hidden) -> tuple[tuple, dict]:
        if isinstance(self.hidden_at, int):
            args = list(self.args)
            args[self.hidden_at] = hidden
            return tuple(args), self.kwargs
        return self.args, {**self.kwargs, self.hidden_at: hidden}


class BlockInputs:
    """A block's calibration inputs: run the block on them (with whatever weights it has now)."""

    def __init__(self, block, hidden: list, calls: list[Call]):
        self.block = block
        self.hidden = hidden
        self.calls = calls

    def __len__(self) -> int:
        return len(self.hidden)

    def run(self, limit: int | None = None, start: int = 0) -> list:
        """The block's outputs for batches start..limit (all by default)."""
        import torch

        outputs = []
        with torch.inference_mode():
            for hidden, call in list(zip(self.hidden, self.calls, strict=True))[start:limit]:
                args, kwargs = call.with_hidden(hidden)
                outputs.append(first_tensor(self.block(*args, **kwargs)))
        return outputs


def find_blocks(module) -> list[tuple[str, Any]]:
    """The repeated layers: the largest nn.ModuleList of two or more same-type children that hold
    Linear layers. Empty when the model has none."""
    from torch import nn

    best: tuple[int, str, Any] | None = None
    for name, child in module.named_modules():
        if not isinstance(child, nn.ModuleList) or len(child) < 2:
            continue
        kinds = {type(m) for m in child}
        if len(kinds) != 1 or not any(isinstance(m, nn.Linear) for m in child[0].modules()):
            continue
        size = sum(p.numel() for p in child.parameters())
        if best is None or size > best[0]:
            best = (size, name, child)
    if best is None:
        return []
    _, name, blocks = best
    return [(f"{name}.{i}" if name else str(i), block) for i, block in enumerate(blocks)]


class _Captured(Exception):
    """Raised by the last block's recorder: everything needed is recorded, stop the forward pass."""


def capture(module, blocks: list[tuple[str, Any]], batches: list, source: str, progress=None):
    """Per batch, the first block's hidden state; per block and batch, the Call that runs it."""
    hidden: list = []
    calls: list[list[Call]] = [[] for _ in blocks]
    originals = []

    def recorder(index: int):
        def forward(*args, **kwargs):
            if args:
                state, at = args[0], 0
            elif "hidden_states" in kwargs:
                state, at = kwargs["hidden_states"], "hidden_states"
            else:
                raise BadInput(
                    f"block '{blocks[index][0]}' is not called with a hidden state; cannot run it alone."
                )
            kept_args = (None, *args[1:]) if at == 0 else args
            kept = {k: (None if k in _CACHE_KWARGS else v) for k, v in kwargs.items() if k != at}
            if "use_cache" in kept:
                kept["use_cache"] = False
            calls[index].append(Call(kept_args, kept, at))
            if index == 0:
                hidden.append(state)
            if index == len(blocks) - 1:
                raise _Captured
            return state

        return forward

    for i, (_, block) in enumerate(blocks):
        originals.append(block.__dict__.get("forward"))
        block.forward = recorder(i)
    if progress:
        progress.start("capturing calibration inputs", total=len(batches))
    try:
        for batch in batches:
            _check_fits(module, batch, source)
            if len(hidden) != len(calls[-1]):
                raise BadInput(f"calibration: the model did not run its blocks on a sample of {source}.")
            if progress:
                progress.advance()
    finally:
        for (_, block), original in zip(blocks, originals, strict=True):
            if original is None:
                del block.forward
            else:
                block.forward = original
    return hidden, calls


def run_blocks(
    module,
    batches: list,
    process: Callable[[str, Any, BlockInputs], None],
    *,
    source: str = "calibration data",
    weights=None,
    progress=None,
    description: str = "blocks",
) -> list[str]:
    """Call `process(name, block, inputs)` for each block in order, then feed the block's outputs (with
    the weights `process` left it) to the next. `weights` (DeferredWeights) reads each block when it
    is reached and keeps the rest of the model on disk meanwhile. Returns the blocks' names."""
    blocks = find_blocks(module)
    if not blocks:  # no repeated layers: the model is one block, its inputs the batches themselves
        if weights is not None:
            weights.load()
        _check_fits(module, batches[0], source)
        calls = [_model_call(module, batch) for batch in batches]
        hidden = [c.args[0] if isinstance(c.hidden_at, int) else c.kwargs[c.hidden_at] for c in calls]
        if progress:
            progress.start(description, total=1)
        process("", module, BlockInputs(module, hidden, calls))
        if progress:
            progress.advance()
            progress.done()
        return [""]
    names = [name for name, _ in blocks]
    if weights is not None:
        weights.load(exclude=names)
    hidden, calls = capture(module, blocks, batches, source, progress)
    if weights is not None:
        weights.release(keep=())  # the embedding table and the rest wait on disk until the end
    if progress:
        progress.start(description, total=len(blocks))
    for i, (name, block) in enumerate(blocks):
        if weights is not None:
            weights.load(name)
        inputs = BlockInputs(block, hidden, calls[i])
        process(name, block, inputs)
        hidden = inputs.run() if i + 1 < len(blocks) else []
        calls[i] = []
        release_free_memory(collect=False)  # the block's float weights and statistics are freed now
        if progress:
            progress.advance()
    if progress:
        progress.done()
    return names


def _check_fits(module, batch, source: str) -> None:
    """Run the model on one batch; an error the data causes becomes a BadInput naming the data."""
    try:
        _call_model(module, batch)
    except _Captured:
        pass
    except (RuntimeError, TypeError, ValueError, IndexError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BadInput(f"calibration data ({source}) does not fit the model: {message}") from None


def first_tensor(output):
    """A block's main output: the tensor itself, or the first element of a tuple."""
    import torch

    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, tuple | list) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise BadInput(f"a block returned a {type(output).__name__}; expected a tensor or a tuple of tensors.")


def _accepts(module, name: str) -> bool:
    try:
        params = inspect.signature(module.forward).parameters
    except (TypeError, ValueError):
        return False
    return name in params


def _call_model(module, batch):
    import torch

    with torch.inference_mode():
        return _call(module, batch)


def _call(module, batch):
    if isinstance(batch, dict):
        extra = {"use_cache": False} if _accepts(module, "use_cache") and "use_cache" not in batch else {}
        return module(**batch, **extra)
    if isinstance(batch, tuple | list):
        return module(*batch)
    return module(batch)


def _model_call(module, batch) -> Call:
    """A whole-model 'block' call: the batch as the model takes it, its first tensor as the hidden state."""
    if isinstance(batch, dict):
        key = next(iter(batch))
        return Call((), {k: v for k, v in batch.items() if k != key}, key)
    if isinstance(batch, tuple | list):
        return Call(tuple(batch), {}, 0)
    return Call((batch,), {}, 0)
