"""Why structured pruning left a layer whole: one reason for each targeted layer it did not shrink.

The reasons come from the dependency analysis (trace.py): the operation that froze the layer's
output dimension (a model output, a reduction, an operation the analysis does not know), a coupling
that makes its outputs another kind of unit (attention heads rather than neurons), or coupled layers
that the targets leave out. The pass records each reason as the `note` of the layer's weight in its
changes (compress.evaluation.change_notes turns them into the report's notes).
"""

from __future__ import annotations

from compress.passes.prune.config import PruneConfig
from compress.passes.prune.trace import Analysis, Group

KINDS = {"channels": ("conv",), "neurons": ("linear",), "heads": ("linear",)}
UNITS = {"channels": "output channels", "neurons": "output features", "heads": "output features"}


def left_whole(analysis: Analysis, chosen: list[Group], cfg: PruneConfig, module) -> dict[str, str]:
    """Layer name -> why it keeps all its output units, for each targeted layer of the pattern's kind
    (a convolution for channels, a Linear layer for neurons and heads) whose outputs the pass keeps."""
    from compress.layers import module_layers

    kinds = KINDS.get(cfg.pattern, ())
    pruned = {m.layer for g in chosen for m in g.members if m.layer and m.role == "producer"}
    targeted = {layer.name for layer in cfg.targets.select(module_layers(module), "prune")}
    reasons = {}
    for layer in module_layers(module):
        if layer.type not in kinds or layer.name not in targeted or layer.name in pruned:
            continue
        weight = module.get_submodule(layer.name).weight
        if weight.dim() < 2 or weight.shape[0] < 2:
            continue
        reasons[layer.name] = f"{UNITS[cfg.pattern]} kept ({_reason(layer.name, analysis, cfg, targeted)})"
    return reasons


def _reason(layer: str, analysis: Analysis, cfg: PruneConfig, targeted: set[str]) -> str:
    frozen = analysis.frozen.get(f"{layer}.weight[0]")
    if frozen is not None:
        return frozen
    own = [g for g in analysis.groups if any(m.layer == layer and m.role == "producer" for m in g.members)]
    if not own:
        return "the analysis found no removable group for them"
    group = own[0]
    others = sorted({m.layer for m in group.members if m.layer and m.layer != layer})
    if group.pattern is not None and group.pattern != cfg.pattern:
        return f"they are {group.pattern}, not {cfg.pattern}"
    if group.pattern is None:
        if not any(m.role == "consumer" for m in group.members):
            return "no layer consumes them"
        odd = next((m for m in group.members if m.outer != 1 or m.inner != 1), None)
        how = f"; {odd.layer or odd.names[0]} reads them in blocks of {odd.inner}" if odd else ""
        return f"coupled to {', '.join(others) or 'other tensors'} in a way no pattern covers{how}"
    outside = [name for name in others if name not in targeted]
    return f"coupled to {', '.join(outside)}, which the targets leave out"
