"""Structured pruning: remove whole neurons, attention heads or convolution channels.

1. Trace the model (trace.py) to find groups of coupled slices, and keep those of the pattern
   whose layers are all targeted.
2. Score each unit of each group: magnitude (L2 norm of all its weight slices) or activation
   (the input norm of each consumer column times that column's weight norm, summed).
3. Choose the units to keep: the same fraction of every group, or one ranking across groups.
4. Check, then cut: the model with the removed units' consumer columns set to zero is the
   reference; the physically smaller model must reproduce it. A mismatch means the analysis missed
   a coupling, and the pass stops with an error rather than return a broken model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from compress.errors import BadInput, Unsupported
from compress.passes.prune.config import PruneConfig
from compress.passes.prune.reproduce import check_reproduces, main_output_of
from compress.passes.prune.trace import Analysis, Group
from compress.registry import PassContext, PassResult


@dataclass
class Plan:
    """Which units of which groups stay; applies to any copy of the traced module."""

    groups: list[Group]
    keep: list  # per group: sorted LongTensor of kept unit indices
    left: dict[str, str] = field(default_factory=dict)  # targeted layer left whole -> why

    def mask(self, module) -> None:
        """Zero the consumer columns of every removed unit (the 'masked original')."""
        import torch

        from compress.resize import get_tensor

        with torch.no_grad():
            for group, kept in zip(self.groups, self.keep, strict=True):
                removed = _complement(kept, group.size)
                for m in group.members:
                    if m.role == "consumer":
                        t = get_tensor(module, m.names[0])
                        t.index_fill_(m.axis, m.kept_indices(removed, group.size), 0)

    def apply(self, module, cfg: PruneConfig | None = None) -> dict[str, dict]:
        """Cut the removed units out of every member tensor; returns the changes per tensor."""
        import torch
        from torch import nn

        from compress.resize import get_tensor, set_tensor

        current: dict[tuple[str, ...], torch.Tensor] = {}
        original: dict[tuple[str, ...], tuple[int, ...]] = {}
        labels: dict[tuple[str, ...], str] = {}
        for group, kept in zip(self.groups, self.keep, strict=True):
            for m in group.members:
                t = current.get(m.names)
                if t is None:
                    t = get_tensor(module, m.names[0]).detach()
                    original[m.names] = tuple(t.shape)
                current[m.names] = t.index_select(m.axis, m.kept_indices(kept, group.size))
                labels[m.names] = group.label
        changes = {}
        for names, t in current.items():
            old = get_tensor(module, names[0])
            value = nn.Parameter(t.contiguous(), old.requires_grad) if isinstance(old, nn.Parameter) else t
            for name in names:  # tied names share the new tensor
                set_tensor(module, name, value)
                changes[name] = {
                    "pattern": cfg.pattern if cfg else None,
                    "method": cfg.method if cfg else None,
                    "group": labels[names],
                    "baseline_shape": list(original[names]),
                    "shape": list(t.shape),
                }
        return changes


def prune_structured(module, cfg: PruneConfig, ctx: PassContext) -> PassResult:
    import torch

    from compress.passes.prune.rebuild import rewrite_config

    plan, sample = make_plan(module, cfg, ctx)
    plan.mask(module)  # the removed columns go anyway: masking in place costs no copy
    with torch.inference_mode():
        reference = main_output_of(module, sample)
    changes = plan.apply(module, cfg)
    check_reproduces(module, sample, reference)
    config = rewrite_config(module, plan, sample, reference)
    for layer, reason in plan.left.items():
        changes.setdefault(f"{layer}.weight", {"pattern": cfg.pattern, "method": cfg.method})["note"] = reason
    before = sum(g.size for g in plan.groups)
    after = sum(len(k) for k in plan.keep)
    stats = {"prune.groups": float(len(plan.groups)), "prune.units_removed": float(before - after)}
    stats["prune.layers_left_whole"] = float(len(plan.left))
    if cfg.recalibrate:
        stats["prune.batch_norms_recalibrated"] = float(recalibrate_batch_norms(module, ctx.data))
    return PassResult(module=module, changes=changes, stats=stats, config=config)


def make_plan(module, cfg: PruneConfig, ctx: PassContext) -> tuple[Plan, object]:
    """Trace, select, score and budget: the units to keep, and the sample the model was traced on."""
    from compress.passes.prune.activations import example_input
    from compress.passes.prune.explain import left_whole
    from compress.passes.prune.trace import analyse

    _refuse_quantized(module)
    sample = example_input(module, ctx.data)
    analysis = analyse(module, sample)
    groups = select_groups(analysis, cfg, module)
    scores = importance(groups, module, cfg, ctx)
    left = left_whole(analysis, groups, cfg, module)
    return Plan(groups, budget(groups, scores, cfg, module), left), sample


def _refuse_quantized(module) -> None:
    from compress.qmodules import _QuantizedWeight

    for name, m in module.named_modules():
        if isinstance(m, _QuantizedWeight):
            raise BadInput(f"prune: layer '{name}' is quantized; prune first, then quantize.")


def select_groups(analysis: Analysis, cfg: PruneConfig, module) -> list[Group]:
    from compress.layers import module_layers

    of_pattern = [g for g in analysis.groups if g.pattern == cfg.pattern]
    if not of_pattern:
        raise Unsupported(_nothing_to_prune(analysis, cfg, module))
    chosen = {layer.name for layer in cfg.targets.select(module_layers(module), "prune")}
    groups = [g for g in of_pattern if set(g.layers) <= chosen]
    if not groups:
        raise BadInput(
            f"prune: the targets leave no {cfg.pattern} to prune (each group is pruned only when all "
            f"its layers are targeted; for example {' + '.join(of_pattern[0].layers)})."
        )
    return groups


def _nothing_to_prune(analysis: Analysis, cfg: PruneConfig, module) -> str:
    found = sorted({g.pattern for g in analysis.groups if g.pattern})
    text = f"prune: the dependency analysis finds no {cfg.pattern} it can remove in {type(module).__name__}"
    text += f" (it finds {', '.join(found)})" if found else ""
    if analysis.unknown_ops:
        ops = ", ".join(sorted(analysis.unknown_ops))
        text += f"; it does not know these operations, and leaves what they touch alone: {ops}"
    return text + "."


def importance(groups: list[Group], module, cfg: PruneConfig, ctx: PassContext) -> list:
    """One score per unit of each group; larger is more important."""
    import torch

    from compress.resize import get_tensor
    from compress.statistics import input_norms, sample_list

    norms = {}
    if cfg.method == "activation":
        consumers = sorted({m.layer for g in groups for m in g.members if m.role == "consumer" and m.layer})
        norms = input_norms(module, consumers, sample_list(ctx.data), ctx.progress)
    scores = []
    for group in groups:
        total = torch.zeros(group.size, dtype=torch.float64)
        for m in group.members:
            if not m.is_parameter or (norms and m.role != "consumer"):
                continue
            t = get_tensor(module, m.names[0]).detach().double()
            per_index = t.transpose(0, m.axis).reshape(t.shape[m.axis], -1)  # [axis, rest]
            if norms:  # ||X_c|| * ||W[:, c]|| per column c
                per_index = per_index * norms[m.layer].double().reshape(-1, *([1] * (per_index.dim() - 1)))
            squares = per_index.pow(2).sum(dim=1).reshape(m.outer, group.size, m.inner)
            total += squares.sum(dim=(0, 2))
        scores.append(total.sqrt())
    return scores


def budget(groups: list[Group], scores: list, cfg: PruneConfig, module) -> list:
    """The kept unit indices of each group, per the scope, sparsity and rounding."""
    import torch

    fraction = cfg.fraction
    if cfg.scope == "layer":
        counts = [round((1 - fraction) * g.size) for g in groups]
    else:
        counts = _global_counts(groups, scores, fraction, module)
    keep = []
    for group, score, count in zip(groups, scores, counts, strict=True):
        count = min(group.size, math.ceil(count / cfg.round_to) * cfg.round_to) if count else 0
        if count == 0:
            raise BadInput(
                f"prune: {cfg.describe()} would remove all {group.size} {cfg.pattern} of '{group.label}' "
                "(the whole layer); lower the sparsity, use scope 'layer', or exclude it."
            )
        keep.append(torch.sort(score.argsort(descending=True)[:count]).values)
    return keep


def _global_counts(groups: list[Group], scores: list, fraction: float, module) -> list[int]:
    """One ranking across groups (each group's scores relative to its mean), weighted by parameters."""
    costs = [g.unit_cost(module) for g in groups]
    units = [
        (float(s[i] / s.mean().clamp(min=1e-12)), gi, costs[gi])
        for gi, s in enumerate(scores)
        for i in range(len(s))
    ]
    units.sort()
    target = fraction * sum(c * g.size for c, g in zip(costs, groups, strict=True))
    removed = [0] * len(groups)
    spent = 0.0
    for _, gi, cost in units:
        if spent + cost / 2 > target:
            break
        removed[gi] += 1
        spent += cost
    return [g.size - r for g, r in zip(groups, removed, strict=True)]


def recalibrate_batch_norms(module, data) -> int:
    """Re-estimate batch-norm statistics on the calibration inputs; returns how many were updated.

    Removing channels shifts the distributions that later batch norms normalise, and their stored
    statistics no longer fit: on a CNN this is the difference between chance and most of the
    accuracy back, with no labels and no training (only the running mean and variance change).
    """
    import torch

    from compress.eval.calls import call_module
    from compress.statistics import sample_list

    norms = [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    samples = sample_list(data)
    if not norms or not samples:
        return 0
    if all(isinstance(x, torch.Tensor) and x.shape[1:] == samples[0].shape[1:] for x in samples):
        stacked = torch.cat(samples)
        samples = list(stacked.split(64))  # statistics of whole batches, not of single images
    momentum = {m: m.momentum for m in norms}
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a plain average over the calibration batches
        m.train()
    try:
        with torch.no_grad():
            for x in samples:
                call_module(module, x)
    finally:
        for m in norms:
            m.momentum = momentum[m]
            m.eval()
    return len(norms)


def _complement(kept, size: int):
    import torch

    mask = torch.ones(size, dtype=torch.bool)
    mask[kept] = False
    return torch.nonzero(mask).reshape(-1)
