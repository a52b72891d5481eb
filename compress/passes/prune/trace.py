"""The dependency analysis: run the model once on a sample input, record every ATen operation, and
find the groups of weight slices that must be removed together.

The model runs for real under a TorchDispatchMode, so control flow, attention implementations and
reshapes are whatever the architecture does for this input; no architecture is described by hand.
Each operation ties or freezes dimension classes (see ops.py and dims.py). The result is a list of
`Group`s: a set of weight, bias and buffer slices (a dimension, or a block of it such as one
attention head) that can be removed as a unit, and the reasons why other dimensions cannot.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from compress.dispatch import bind_arguments
from compress.passes.prune.dims import DimClasses
from compress.passes.prune.ops import RULES


def tensor_leaves(value: Any) -> list:
    """The tensors inside a model input or output (tensors, dicts, model outputs, tuples, lists)."""
    import torch

    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict) or (hasattr(value, "values") and callable(value.values)):
        return [t for v in value.values() for t in tensor_leaves(v)]
    if isinstance(value, list | tuple):
        return [t for v in value for t in tensor_leaves(v)]
    return []


class Tracer:
    """Holds the dimension classes of every tensor the model touches while it runs."""

    def __init__(self) -> None:
        self.classes = DimClasses()
        self._dims: dict[int, list[int]] = {}
        self._keep: list = []  # keeps traced tensors alive so their ids stay unique
        self.unknown: Counter[str] = Counter()

    def register(self, t, frozen: str | None = None) -> list[int]:
        if id(t) not in self._dims:
            self._dims[id(t)] = [self.classes.new(s, frozen if s > 1 else None) for s in t.shape]
            self._keep.append(t)
        return self._dims[id(t)]

    def dims(self, t) -> list[int]:
        """A tensor's classes; one never seen before is a constant from outside, so frozen."""
        return self.register(t, "a constant tensor of the model's code")

    def tie(self, a: int, b: int) -> None:
        self.classes.union(a, b)

    def freeze_all(self, tensors: list, reason: str) -> None:
        for t in tensors:
            for c in self.dims(t):
                self.classes.freeze(c, reason)

    def record(self, func, args: tuple, kwargs: dict, out: Any) -> None:
        import torch
        from torch.utils._pytree import tree_leaves

        inputs = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        for t in inputs:
            self.dims(t)
        outs = [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
        for t in outs:
            self.register(t)
        name = func.overloadpacket.__name__
        rule = RULES.get(name) or RULES.get(name.rstrip("_"))
        if rule is None:
            if inputs or outs:
                self.unknown[name] += 1
                self.freeze_all(inputs + outs, f"used by {name}, which the analysis does not know")
            return
        try:
            rule(self, bind_arguments(func, args, kwargs), inputs, outs)
        except (IndexError, KeyError, TypeError, ValueError) as exc:  # an unusual call: stay safe
            self.unknown[f"{name} ({type(exc).__name__})"] += 1
            self.freeze_all(inputs + outs, f"an unusual call of {name}")


@dataclass(frozen=True)
class Member:
    """One tensor dimension (or a block of it) that belongs to a group."""

    names: tuple[str, ...]  # state_dict names of the tensor (several when tied)
    axis: int
    outer: int  # the dimension is outer x units x inner, row-major
    inner: int
    role: str  # "producer" (output rows), "consumer" (contracted input columns) or "follower"
    layer: str | None  # the Linear/Conv/Embedding that owns it, for targets
    kind: str | None  # "linear" | "conv" | "embedding" | None
    is_parameter: bool

    def kept_indices(self, units, size: int):
        """Indices along `axis` that remain when only `units` (sorted) of `size` remain."""
        import torch

        outer = torch.arange(self.outer)[:, None, None] * (size * self.inner)
        mid = units[None, :, None] * self.inner
        inner = torch.arange(self.inner)[None, None, :]
        return (outer + mid + inner).reshape(-1)


@dataclass
class Group:
    """Slices that are removed together, `size` units of them."""

    size: int
    members: list[Member]
    pattern: str | None = None
    label: str = ""

    @property
    def layers(self) -> list[str]:
        return sorted({m.layer for m in self.members if m.layer})

    def unit_cost(self, module) -> int:
        """Parameters removed with one unit."""
        from compress.resize import get_tensor

        total = 0
        for m in self.members:
            if m.is_parameter:
                t = get_tensor(module, m.names[0])
                total += t.numel() // self.size
        return total


@dataclass
class Analysis:
    groups: list[Group]
    unknown_ops: Counter = field(default_factory=Counter)
    frozen: dict[str, str] = field(default_factory=dict)  # weight dimension -> why it stays


def analyse(module, sample) -> Analysis:
    """Trace `module` on `sample` and return its prunable groups."""
    import torch

    from compress.dispatch import watching
    from compress.eval.calls import call_module

    tracer = Tracer()
    owners: dict[int, tuple[Any, list[str], bool]] = {}
    for is_param, named in ((True, module.named_parameters), (False, module.named_buffers)):
        for name, t in named(remove_duplicate=False):
            if t is not None:
                owners.setdefault(id(t), (t, [], is_param))[1].append(name)
    for t, _, _ in owners.values():
        tracer.register(t)
    for t in tensor_leaves(sample):
        tracer.register(t, "a model input")
    with torch.inference_mode(), watching(tracer.record):
        output = call_module(module, sample)
    tracer.freeze_all(tensor_leaves(output), "a model output")
    tracer.classes.close()
    return _groups(module, tracer, owners)


def _role(module, name: str, axis: int) -> tuple[str, str | None, str | None]:
    from compress.qmodules import module_kind

    owner_name, _, attr = name.rpartition(".")
    owner = module.get_submodule(owner_name) if owner_name else module
    kind = module_kind(owner)
    layer = owner_name if kind else None
    if attr == "weight" and kind in ("linear", "conv"):
        return ("producer" if axis == 0 else "consumer"), layer, kind
    if attr == "weight" and kind == "embedding" and axis == 1:
        return "producer", layer, kind
    return "follower", layer, kind


def _groups(module, tracer: Tracer, owners: dict) -> Analysis:
    classes = tracer.classes
    members: dict[int, list[Member]] = {}
    ambiguous: set[int] = set()
    frozen: dict[str, str] = {}
    for tid, (t, names, is_param) in owners.items():
        for axis, c in enumerate(tracer._dims[tid]):
            if t.shape[axis] > 1 and classes.is_frozen(c):
                frozen[f"{names[0]}[{axis}]"] = classes.frozen[classes.find(c)]
            for node in classes.nodes(c):
                places = classes.locate(c, node)
                if len(places) != 1:
                    ambiguous.add(node)
                    continue
                role, layer, kind = _role(module, names[0], axis)
                outer, inner = places[0]
                members.setdefault(node, []).append(
                    Member(tuple(names), axis, outer, inner, role, layer, kind, is_param)
                )
    groups = []
    for node, found in members.items():
        root = classes.find(node)
        if root != node or root in ambiguous or classes.is_frozen(root) or root in classes.factors:
            continue
        if classes.size[root] < 2:
            continue
        group = Group(size=classes.size[root], members=found)
        group.pattern = classify(group)
        producers = [m.layer for m in found if m.role == "producer" and m.layer]
        group.label = producers[0] if producers else (group.layers or ["?"])[0]
        groups.append(group)
    return Analysis(groups=groups, unknown_ops=tracer.unknown, frozen=frozen)


def classify(group: Group) -> str | None:
    """neurons, heads or channels, or None for a group that fits none of them."""
    roles = {m.role for m in group.members}
    if not {"producer", "consumer"} <= roles:
        return None
    kinds = {m.kind for m in group.members if m.kind}
    whole = [m.outer == 1 and m.inner == 1 for m in group.members]
    if all(whole):
        return "channels" if "conv" in kinds else "neurons"
    if "conv" in kinds and all(
        w or flattened_into_linear(m) for w, m in zip(whole, group.members, strict=True)
    ):
        return "channels"
    if all(m.outer == 1 and m.inner > 1 for m in group.members) and "conv" not in kinds:
        return "heads"
    return None


def flattened_into_linear(member: Member) -> bool:
    """A Linear layer that reads a convolution's channels flattened with the positions of its
    feature map ([N, C, H, W] -> [N, C*H*W]): each channel is a block of its input columns."""
    return member.role == "consumer" and member.kind == "linear"
