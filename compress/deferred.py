"""A model whose tensors stay in the checkpoint until a pass asks for them.

A data-aware pass that works block by block (GPTQ, AWQ) needs one block's weights at a time.
Reading each block when it is reached, and putting the parts it has finished with (the embedding
table, once the first block's inputs are captured) back on disk until the output is saved, keeps
peak memory near the largest part of the model plus one block rather than the whole model.

Tensors not read yet are meta tensors: a forward pass that touches one by mistake fails loudly
instead of computing with uninitialised memory.
"""

from __future__ import annotations

import weakref
from pathlib import Path
from typing import Any

from compress.checkpoint import SafetensorsFile
from compress.errors import BadInput
from compress.formats import read_compression_info
from compress.model import (
    Model,
    align_names,
    empty_architecture,
    family_of,
    load_config,
    load_tokenizer,
    tied_weights,
)


class DeferredWeights:
    """The link between a module's placeholder tensors and the checkpoint that holds their values."""

    def __init__(self, module, file: SafetensorsFile, to_module: dict[str, str]):
        self.module = module
        self.file = file
        stored = {name: s for s, name in to_module.items()}  # module name -> stored name
        self._pending: dict[int, tuple[Any, str]] = {}  # id(placeholder) -> (placeholder, stored name)
        self._loaded: dict[str, tuple[weakref.ref, str]] = {}  # module name -> (tensor read, stored name)
        originals: dict[int, tuple[Any, str]] = {}
        for name, _, _, tensor in _slots(module):
            if name in stored:
                originals.setdefault(id(tensor), (tensor, stored[name]))
        installed, _ = self._replace({key: _placeholder(t) for key, (t, _) in originals.items()})
        for key, placeholder in installed.items():
            self._pending[id(placeholder)] = (placeholder, originals[key][1])

    def load(self, *prefixes: str, exclude: list[str] | tuple[str, ...] = ()) -> None:
        """Read every pending tensor of the modules named (and their children), except those under
        `exclude`; no names: everything."""
        wanted = {
            id(t)
            for name, _, _, t in _slots(self.module)
            if id(t) in self._pending
            and _under(name, prefixes)
            and not (exclude and _under(name, tuple(exclude)))
        }
        values = {}
        for key in wanted:
            placeholder, stored_name = self._pending.pop(key)
            value = self.file.read(stored_name)
            values[key] = (
                value.to(placeholder.dtype) if value.dtype != placeholder.dtype else value,
                stored_name,
            )
        installed, changed = self._replace({key: v for key, (v, _) in values.items()})
        for name, key in changed.items():
            self._loaded[name] = (weakref.ref(installed[key]), values[key][1])

    def release(self, keep: list[str]) -> None:
        """Put back on disk every tensor read earlier and still unchanged, except under `keep`."""
        swap: dict[int, Any] = {}
        stored: dict[int, str] = {}
        for name, _, _, tensor in _slots(self.module):
            entry = self._loaded.get(name)
            if entry is None or entry[0]() is not tensor or (keep and _under(name, tuple(keep))):
                continue
            swap.setdefault(id(tensor), _placeholder(tensor))
            stored[id(tensor)] = entry[1]
        installed, changed = self._replace(swap)
        for key, placeholder in installed.items():
            self._pending[id(placeholder)] = (placeholder, stored[key])
        for name in changed:
            self._loaded.pop(name, None)

    def finish(self) -> None:
        """Read everything still on disk; afterwards the module is an ordinary in-memory model."""
        self.load()
        left = [name for name, _, _, tensor in _slots(self.module) if tensor.is_meta]
        if left:
            raise BadInput(f"{self.file.path}: has no values for {', '.join(left[:5])} after loading.")

    def _replace(self, swap: dict[int, Any]) -> tuple[dict[int, Any], dict[str, int]]:
        """Give every slot holding the tensor with id K the value swap[K], as one object per value so
        tied weights stay tied. Returns {K: the object installed} and {slot name: K}."""
        import torch

        installed: dict[int, Any] = {}
        changed: dict[str, int] = {}
        for name, owner, leaf, tensor in list(_slots(self.module)):
            key = id(tensor)
            if key not in swap:
                continue
            if key not in installed:
                is_param = leaf in owner._parameters
                value = swap[key]
                installed[key] = (
                    torch.nn.Parameter(value, requires_grad=tensor.requires_grad) if is_param else value
                )
            store = owner._parameters if leaf in owner._parameters else owner._buffers
            store[leaf] = installed[key]
            changed[name] = key
        return installed, changed


def load_deferred(weights: Path, *, tokenizer: bool = True) -> tuple[Model, DeferredWeights]:
    """The architecture of a float checkpoint with every stored tensor left on disk for now."""
    file = SafetensorsFile(weights)
    if read_compression_info(file.metadata, str(weights)) is not None:
        raise BadInput(f"{weights}: is already compressed by compress; start from the float checkpoint.")
    config = load_config(weights.parent)
    if config is None:
        raise BadInput(f"{weights}: has no config.json beside it, so it cannot be built as a model.")
    module = empty_architecture(config).eval()
    expected = module.state_dict(keep_vars=True)
    to_module = align_names(file.names(), set(expected), getattr(module, "base_model_prefix", ""))
    stored = {n for n in to_module.values() if n in expected}
    for target, source in tied_weights(module, config):
        if target not in stored and source in stored:
            owner_t, owner_s = target.rsplit(".", 1)[0], source.rsplit(".", 1)[0]
            module.get_submodule(owner_t).weight = module.get_submodule(owner_s).weight
            stored.add(target)
    notes = [
        f"ignored tensor '{s}' (not used by {type(module).__name__})"
        for s, n in to_module.items()
        if n not in expected
    ]
    buffers = {n for n, _ in module.named_buffers()}
    absent = [n for n in expected if n not in stored and n not in buffers]
    if absent:
        shown = ", ".join(absent[:5]) + (" ..." if len(absent) > 5 else "")
        raise BadInput(
            f"{weights}: lacks {len(absent)} tensors that {type(module).__name__} needs ({shown})."
        )
    deferred = DeferredWeights(module, file, {s: n for s, n in to_module.items() if n in expected})
    model = Model(
        module=module,
        family=family_of(config),
        checkpoint=weights,
        config=config,
        tokenizer=load_tokenizer(weights.parent) if tokenizer else None,
        notes=notes,
    )
    return model, deferred


def _slots(module):
    """(module name, owner, attribute, tensor) of every parameter and buffer, tied aliases included."""
    for prefix, owner in module.named_modules(remove_duplicate=False):
        for store in (owner._parameters, owner._buffers):
            for leaf, tensor in store.items():
                if tensor is not None:
                    yield (f"{prefix}.{leaf}" if prefix else leaf), owner, leaf, tensor


def _placeholder(tensor):
    import torch

    return torch.empty(tensor.shape, dtype=tensor.dtype, device="meta")


def _under(name: str, prefixes: tuple[str, ...]) -> bool:
    if not prefixes:
        return True
    return any(p == "" or name == p or name.startswith(p + ".") for p in prefixes)
