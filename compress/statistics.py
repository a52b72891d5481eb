"""Statistics of a model's layer inputs over calibration data, gathered in one loop.

A pass says which statistics it needs (the L2 norm of each input feature for Wanda and activation-
aware pruning; each channel's min and max for INT8 activation ranges); `run_hooked` is the one
forward loop over the samples that records them through hooks, with no gradients and no key/value
cache, removing the hooks whatever happens. Calibration data (compress.calibration.CalibrationData)
is the usual source; a tensor, a dict of tensors, or a list of either also works.
"""

from __future__ import annotations

import inspect
from typing import Any

from compress.errors import BadInput


def sample_list(data: Any) -> list:
    """The model inputs in `data` (CalibrationData, a tensor, a dict, or a list of them)."""
    import torch

    if data is None:
        return []
    if hasattr(data, "samples"):
        return list(data.samples)
    if isinstance(data, torch.Tensor | dict):
        return [data]
    if isinstance(data, list | tuple):
        return list(data)
    raise BadInput(f"calibration: cannot use a {type(data).__name__} as calibration data.")


def without_cache(module, sample: Any) -> Any:
    """Ask a transformers model not to build a key/value cache (not needed, and it concatenates)."""
    if isinstance(sample, dict) and "use_cache" not in sample:
        params = inspect.signature(module.forward).parameters
        if "use_cache" in params:
            return {**sample, "use_cache": False}
    return sample


def run_hooked(
    module, samples: list, handles: list, progress=None, label: str = "calibrating", after_each=None
) -> None:
    """Run each sample through `module` (no gradients, no key/value cache) while the hooks behind
    `handles` record what they need; the hooks are removed afterwards whatever happens."""
    import torch

    from compress.eval.calls import call_module

    if progress:
        progress.start(label, total=len(samples))
    try:
        with torch.inference_mode():
            for sample in samples:
                call_module(module, without_cache(module, sample))
                if after_each is not None:
                    after_each()
                if progress:
                    progress.advance()
    finally:
        for handle in handles:
            handle.remove()
        if progress:
            progress.done()


def input_norms(module, layer_names: list[str], samples: list, progress=None) -> dict[str, Any]:
    """L2 norm of each input feature (Linear) or input channel (Conv) of the named layers."""
    import torch

    if not samples:
        raise BadInput("activation statistics need calibration data; none was given.")
    sums: dict[str, Any] = {}

    def hook(name: str):
        def accumulate(mod, args, _out):
            x = args[0].detach().float()
            if isinstance(mod, torch.nn.modules.conv._ConvNd):
                x = x.transpose(0, 1).reshape(x.shape[1], -1).T
            squares = x.reshape(-1, x.shape[-1]).pow(2).sum(dim=0)
            sums[name] = sums[name] + squares if name in sums else squares

        return accumulate

    handles = [module.get_submodule(n).register_forward_hook(hook(n)) for n in layer_names]
    run_hooked(module, samples, handles, progress)
    missing = [n for n in layer_names if n not in sums]
    if missing:
        raise BadInput(f"the calibration data never reached layer '{missing[0]}'.")
    return {n: s.sqrt() for n, s in sums.items()}
