"""Input statistics of a block's Linear layers on calibration data: what GPTQ and AWQ need.

Linear layers that read the same tensor (an attention block's q, k and v projections; an MLP's
gate and up projections) share one set of statistics, computed once. For each such input:
- the Gram matrix H = sum of x x^T over calibration tokens (GPTQ's Hessian, up to a factor 2; the
  output error of a weight change d on these tokens is d^T H d);
- the mean magnitude of each input channel (AWQ's saliency);
- the submodule of the block that produced the tensor, if one did (AWQ folds its scales there).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import torch

from compress.sequential import BlockInputs


@dataclass
class InputStats:
    """Statistics of one input tensor and the Linear layers (names within the block) that read it."""

    layers: list[str]
    gram: torch.Tensor
    abs_sum: torch.Tensor
    tokens: int = 0
    producer: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def abs_mean(self) -> torch.Tensor:
        return self.abs_sum / max(self.tokens, 1)


def collect_input_stats(
    block, linears: list[str], inputs: BlockInputs
) -> tuple[list[InputStats], torch.Tensor]:
    """Run the block on its calibration inputs and gather the statistics of the named Linear layers;
    also returns the block's output on the first batch (a reference for checks)."""
    modules = {name: block.get_submodule(name) for name in linears}
    order: list[str] = []  # linears in the order the block calls them
    first_input: dict[str, object] = {}  # first batch only: the tensor each linear read first
    probe_inputs: dict[str, list] = {}  # first batch only: every tensor each linear read (kept alive)
    produced: dict[int, tuple[str, weakref.ref]] = {}
    groups: list[InputStats] = []
    leader: dict[str, InputStats] = {}  # the group each layer accumulates into, if it is the first reader
    handles = []

    def pre_hook(name):
        def hook(_module, args):
            x = args[0]
            if probing[0]:
                if name not in first_input:
                    order.append(name)
                    first_input[name] = x
                probe_inputs.setdefault(name, []).append(x)
            stats = leader.get(name)
            if stats is not None:
                _accumulate(stats, x)

        return hook

    def output_hook(name):
        def hook(_module, _args, output):
            if probing[0] and isinstance(output, torch.Tensor):
                known = produced.get(id(output))
                if known is None or known[1]() is not output:  # keep the first module to produce it
                    produced[id(output)] = (name, weakref.ref(output))

        return hook

    probing = [True]
    for name, module in modules.items():
        handles.append(module.register_forward_pre_hook(pre_hook(name)))
    for name, module in block.named_modules():
        if name:
            handles.append(module.register_forward_hook(output_hook(name)))
    try:
        # The first batch finds which layers share an input and who produced it; its inputs are
        # kept for that, then added to the shared statistics with every other batch.
        reference = inputs.run(limit=1)[0]
        for name in order:
            x = first_input[name]
            owner = next((g for g in groups if first_input[g.layers[0]] is x), None)
            if owner is None:
                width = x.shape[-1]
                source = produced.get(id(x))
                owner = InputStats(
                    layers=[],
                    gram=torch.zeros(width, width),
                    abs_sum=torch.zeros(width),
                    producer=source[0] if source and source[1]() is x else None,
                )
                groups.append(owner)
                leader[name] = owner
            owner.layers.append(name)
        for name, stats in leader.items():
            for x in probe_inputs[name]:
                _accumulate(stats, x)
        first_input.clear()
        probe_inputs.clear()
        produced.clear()
        probing[0] = False
        inputs.run(start=1)
    finally:
        for handle in handles:
            handle.remove()
    missing = [name for name in linears if not any(name in g.layers for g in groups)]
    if missing:
        groups.extend(_unused(block, missing))
    return groups, reference


def _accumulate(stats: InputStats, x: torch.Tensor) -> None:
    flat = x.detach().reshape(-1, x.shape[-1]).to(torch.float32)
    stats.gram.addmm_(flat.T, flat)
    stats.abs_sum += flat.abs().sum(dim=0)
    stats.tokens += flat.shape[0]


def _unused(block, names: list[str]) -> list[InputStats]:
    """Layers the calibration data never reached: statistics of zero tokens (data-free fallback)."""
    out = []
    for name in names:
        width = block.get_submodule(name).in_features
        out.append(InputStats(layers=[name], gram=torch.zeros(width, width), abs_sum=torch.zeros(width)))
    return out
