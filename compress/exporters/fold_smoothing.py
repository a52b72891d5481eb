"""SmoothQuant factors folded into the normalization layer that feeds the smoothed layers.

A smoothed INT8 layer multiplies its input by a per-channel factor (`input_smooth`) before
quantizing it. Formats without a place for that factor (compressed-tensors) can still hold the
model exactly when the input is the output of a norm with a per-channel weight that nothing else
reads: pre-norm transformers (Llama's, Gemma's RMSNorm feeding q/k/v or the FFN's gate and up).
Then `norm(x) * w * s` is `norm(x) * (w * s)` (Gemma's `1 + w` becomes `(1 + w) * s - 1`).

Which norm produces a layer's input is read off one forward pass (the same tensor object). Whether
nothing else reads it (in BERT the norm's output also feeds the residual sum) is checked on the
whole model: folded and unfolded must give the same outputs, with activation rounding off so only
float arithmetic differs. A layer whose input comes from no norm (attention output, FFN down
projection) cannot be folded, and the export is refused naming it.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from compress.errors import BadInput

# Folded and unfolded outputs agree to float rounding: max |difference| / max |output|.
MAX_RELATIVE_DIFF = 1e-4


def fold_smoothing(folder: Path, smooth: dict[str, torch.Tensor], plain: dict) -> dict[str, torch.Tensor]:
    """The norm weights, by parameter name, with each smoothed layer's factors folded in."""
    from compress.model import load

    module = load(folder).module
    sample = _sample_ids(module)
    producers, readers = _producers(module, sample)
    folded: dict[str, torch.Tensor] = {}
    for layer in sorted(smooth):
        norm = producers.get(layer)
        if norm is None:
            raise BadInput(
                f"export compressed-tensors: layer '{layer}' carries SmoothQuant factors but reads no "
                "normalization layer to fold them into (the format has no place for them); quantize "
                "with smooth 0 or exclude the layer."
            )
        for other in readers[norm]:
            if other not in smooth or not torch.equal(smooth[other], smooth[layer]):
                raise BadInput(
                    f"export compressed-tensors: layers '{layer}' and '{other}' read one normalization "
                    f"layer ('{norm}') but are not smoothed alike, so the factors cannot be folded into it."
                )
        if f"{norm}.weight" not in folded:
            folded.update(_folded_params(module.get_submodule(norm), smooth[layer], norm, layer))
    for name in folded:
        if name not in plain:
            raise BadInput(f"export compressed-tensors: the checkpoint has no tensor '{name}' to fold into.")
    _check_whole_model(module, folded, sample)
    return folded


def _folded_params(norm: nn.Module, factor: torch.Tensor, name: str, layer: str) -> dict[str, torch.Tensor]:
    """The norm's weight (and bias) such that norm'(x) == norm(x) * factor, for the `w` and `1 + w`
    conventions; by parameter name."""
    weight = norm.weight.detach()
    factor = factor.to(weight.dtype)
    bias = getattr(norm, "bias", None)
    probe = torch.randn(3, weight.shape[0], generator=torch.Generator().manual_seed(0)).to(weight.dtype)
    with torch.no_grad():
        want = norm(probe) * factor
        for candidate in (weight * factor, (1 + weight) * factor - 1):
            trial = copy.deepcopy(norm)
            trial.weight.data = candidate
            if isinstance(bias, torch.Tensor):
                trial.bias.data = bias.detach() * factor
            if torch.allclose(trial(probe), want, rtol=1e-5, atol=1e-6):
                params = {f"{name}.weight": candidate}
                if isinstance(bias, torch.Tensor):
                    params[f"{name}.bias"] = trial.bias.detach().clone()
                return params
    raise BadInput(
        f"export compressed-tensors: the SmoothQuant factors of layer '{layer}' cannot be folded into "
        f"'{name}' (its output is not its weight times a normalized input)."
    )


def _producers(module: nn.Module, sample: torch.Tensor) -> tuple[dict[str, str], dict[str, list[str]]]:
    """({Linear layer: the norm whose output it reads}, {norm: the Linear layers reading it})."""
    from compress.qmodules import QuantLinear

    outputs: dict[int, str] = {}
    inputs: dict[str, int] = {}
    alive: list[torch.Tensor] = []  # keeps the tensors alive so their ids stay unique

    def record_output(name: str):
        def hook(_module, _args, output):
            if isinstance(output, torch.Tensor):
                outputs[id(output)] = name
                alive.append(output)

        return hook

    def record_input(name: str):
        def hook(_module, args):
            inputs.setdefault(name, id(args[0]))
            alive.append(args[0])

        return hook

    hooks = []
    for name, sub in module.named_modules():
        if _is_norm(sub):
            hooks.append(sub.register_forward_hook(record_output(name)))
        elif isinstance(sub, nn.Linear | QuantLinear):
            hooks.append(sub.register_forward_pre_hook(record_input(name)))
    try:
        with torch.no_grad():
            module(sample)
    finally:
        for hook in hooks:
            hook.remove()
    producers = {layer: outputs[ident] for layer, ident in inputs.items() if ident in outputs}
    readers: dict[str, list[str]] = {}
    for layer, norm in producers.items():
        readers.setdefault(norm, []).append(layer)
    return producers, readers


def _is_norm(module: nn.Module) -> bool:
    weight = getattr(module, "weight", None)
    return "Norm" in type(module).__name__ and isinstance(weight, torch.Tensor) and weight.dim() == 1


def _check_whole_model(module: nn.Module, folded: dict[str, torch.Tensor], sample: torch.Tensor) -> None:
    """Folded and unfolded models agree (activation rounding off); else something else reads a norm."""
    from compress.qmodules import QuantLinear

    layers = [m for m in module.modules() if isinstance(m, QuantLinear)]
    modes = [m.activations for m in layers]
    for m in layers:
        m.activations = "none"
    try:
        with torch.no_grad():
            want = _output(module(sample))
            trial = copy.deepcopy(module)
            for name, value in folded.items():
                owner, _, part = name.rpartition(".")
                getattr(trial.get_submodule(owner), part).data = value.clone()
            for m in trial.modules():
                if isinstance(m, QuantLinear):
                    m.input_smooth = None
            got = _output(trial(sample))
    finally:
        for m, mode in zip(layers, modes, strict=True):
            m.activations = mode
    diff = float((got - want).abs().max() / want.abs().max().clamp(min=1e-30))
    if diff > MAX_RELATIVE_DIFF:
        norms = ", ".join(sorted({n.rpartition(".")[0] for n in folded}))
        raise BadInput(
            f"export compressed-tensors: folding SmoothQuant factors into {norms} changes the model's "
            f"output (relative difference {diff:.2g}): another path reads those norms' outputs."
        )


def _sample_ids(module: nn.Module) -> torch.Tensor:
    config = getattr(module, "config", None)
    vocab = int(getattr(config, "vocab_size", 0) or 0)
    if vocab < 2:
        raise BadInput("export compressed-tensors: folding SmoothQuant factors needs a token model.")
    return (torch.arange(16) % (vocab - 1) + 1).reshape(1, 16)


def _output(out) -> torch.Tensor:
    for key in ("logits", "last_hidden_state"):
        value = getattr(out, key, None)
        if isinstance(value, torch.Tensor):
            return value.float()
    return (out[0] if isinstance(out, tuple | list) else out).float()
