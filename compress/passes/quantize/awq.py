"""AWQ (Lin et al., 2023): scale the input channels that carry large activations up before quantizing,
and the tensor that feeds them down by the same factor, so the product is unchanged while the
salient weights get a finer effective step; then search each group's clipping range on the data.

For each tensor that feeds Linear layers (q, k and v read one; gate and up another):
1. scale search: s = mean|x|^a for a in 0, 0.05, ..., 0.95 (normalised), keeping the a whose
   quantized layers have the least output error on the calibration tokens (d^T H d, exact);
2. fold: 1/s goes into the module that produced the tensor: a norm's weight (w/s, or (1+w)/s - 1
   for norms that scale by 1 + w, as Gemma's do) or a Linear's output rows (up_proj for down_proj,
   v_proj for o_proj when the widths match). The fold is found without architecture tables: each
   candidate is tried on a calibration batch with a random scale and kept only if the block's
   output is unchanged, so a fold that would change the model (a residual that reads the same
   tensor, a nonlinearity between producer and consumer) is never applied. No valid fold: no scale.
   The blocks of a model share their code, so the folds of the first block are tried first on the
   next ones (all in one run);
3. clip search per group, in the scaled space, on the same output-error measure.
The stored weights are the scaled ones and the norms or rows carry 1/s: an ordinary checkpoint of
the same architecture, in the same INT4 format as round-to-nearest.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from compress.passes.quantize.clipping import clip_search, gram_blocks
from compress.passes.quantize.rtn import int4_codes, int4_params
from compress.passes.quantize.stats import InputStats
from compress.sequential import BlockInputs
from compress.threads import on_one_thread

ALPHAS = tuple(i / 20 for i in range(20))
FOLD_TOLERANCE = 1e-3


@on_one_thread
def search_scale(
    stats: InputStats,
    weights: dict[str, torch.Tensor],
    quantizers: dict[str, Callable[[torch.Tensor], torch.Tensor]],
) -> tuple[torch.Tensor, float]:
    """The per-channel scale (and its exponent) with the least output error of the quantized layers.

    `weights` are the layers reading this input; `quantizers` maps the quantized ones to a function
    returning the dequantized form of a weight (float layers have no error and are left out)."""
    gram = stats.gram
    saliency = stats.abs_mean.clamp(min=1e-8)
    best_scale, best_alpha, best_err = torch.ones_like(saliency), 0.0, None
    for alpha in ALPHAS:
        scale = saliency.pow(alpha)
        scale = scale / (scale.max() * scale.min()).sqrt()
        scale = scale.clamp(min=1e-4 * float(scale.max()))
        err = 0.0
        for name, quantize in quantizers.items():
            w = weights[name]
            delta = quantize(w * scale) / scale - w
            err += float(((delta @ gram) * delta).sum())
        if best_err is None or err < best_err:
            best_scale, best_alpha, best_err = scale, alpha, err
    return best_scale, best_alpha


def rtn_dequantizer(group_size: int, symmetric: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    def dequantize(w: torch.Tensor) -> torch.Tensor:
        rows, cols = w.shape
        groups = w.reshape(rows, cols // group_size, group_size)
        scale, zero = int4_params(groups, symmetric)
        codes = int4_codes(groups, scale, zero).to(torch.float32)
        return ((codes - zero[..., None]) * scale[..., None]).reshape(rows, cols)

    return dequantize


def int8_dequantizer() -> Callable[[torch.Tensor], torch.Tensor]:
    from compress.passes.quantize.rtn import quantize_int8

    return lambda w: quantize_int8(w).dequantize(torch.float32)


@on_one_thread
def clip_int4(
    weight: torch.Tensor, gram: torch.Tensor, group_size: int, symmetric: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """AWQ's clip search: per group, the range with the least output error on the calibration tokens."""
    rows, cols = weight.shape
    groups = weight.reshape(rows, cols // group_size, group_size)
    return clip_search(groups, symmetric, gram_blocks(gram, group_size))


# ---- folding 1/s into the producer ---------------------------------------------------------------


def fold_candidates(block, stats: InputStats) -> list[tuple[str, str]]:
    """(module name, fold kind) worth trying for an input: its producer first, then Linear layers of
    the block whose output width matches (nearest before the first reader first)."""
    width = stats.gram.shape[0]
    found: list[tuple[str, str]] = []
    if stats.producer is not None:
        module = block.get_submodule(stats.producer)
        if isinstance(module, nn.Linear) and module.out_features == width:
            found.append((stats.producer, "rows"))
        elif _is_norm_like(module, width):
            found += [(stats.producer, "weight"), (stats.producer, "one_plus_weight")]
    names = [name for name, _ in block.named_modules()]
    first_reader = names.index(stats.layers[0]) if stats.layers[0] in names else len(names)
    linears = [
        name
        for name, m in block.named_modules()
        if isinstance(m, nn.Linear) and m.out_features == width and name not in stats.layers
    ]
    linears.sort(key=lambda n: (names.index(n) > first_reader, abs(first_reader - names.index(n))))
    found += [(name, "rows") for name in linears if (name, "rows") not in found]
    return found


Fold = tuple[str, str] | None  # (producer module, fold kind), or None: no valid fold


def find_folds(
    block, groups: list[InputStats], inputs: BlockInputs, reference: torch.Tensor, hints: dict
) -> list[Fold]:
    """A fold for each input group. Blocks of one model share their code, so the folds found for an
    earlier block (`hints`, keyed by the groups' layer names) are checked first, all in one run."""
    keys = [tuple(g.layers) for g in groups]
    if keys and all(key in hints for key in keys):
        proposal = [hints[key] for key in keys]
        if _unchanged(block, groups, proposal, inputs, reference):
            return proposal
    found = []
    for group in groups:
        fold = next(
            (c for c in fold_candidates(block, group) if _unchanged(block, [group], [c], inputs, reference)),
            None,
        )
        found.append(fold)
    hints.update(zip(keys, found, strict=True))
    return found


def _unchanged(block, groups: list[InputStats], folds: list[Fold], inputs: BlockInputs, reference) -> bool:
    """Whether applying the folds with random scales leaves the block's output on one batch unchanged."""
    touched = [name for g, f in zip(groups, folds, strict=True) if f for name in (f[0], *g.layers)]
    saved = _snapshot(block, touched)
    for group, fold in zip(groups, folds, strict=True):
        if fold is not None:
            width = group.gram.shape[0]
            generator = torch.Generator().manual_seed(width)
            apply_fold(block, group.layers, *fold, torch.empty(width).uniform_(0.5, 2.0, generator=generator))
    outputs = inputs.run(limit=1)
    _restore(block, saved)
    return _close(outputs[0], reference)


def apply_fold(block, readers: list[str], producer: str, kind: str, scale: torch.Tensor) -> None:
    """Divide the producer's output by `scale` and multiply the readers' input columns by it."""
    with torch.no_grad():
        module = block.get_submodule(producer)
        if kind == "rows":
            module.weight.div_(scale[:, None])
        elif kind == "weight":
            module.weight.div_(scale)
        else:  # "one_plus_weight": the norm multiplies by (1 + weight)
            module.weight.copy_((1.0 + module.weight) / scale - 1.0)
        bias = getattr(module, "bias", None)
        if isinstance(bias, torch.Tensor):
            bias.div_(scale)
        for name in readers:
            block.get_submodule(name).weight.mul_(scale)


def _is_norm_like(module, width: int) -> bool:
    params = dict(module.named_parameters(recurse=False))
    weight = params.get("weight")
    if weight is None or weight.dim() != 1 or weight.numel() != width:
        return False
    return set(params) <= {"weight", "bias"} and not list(module.children())


def _snapshot(block, names: list[str]) -> dict[str, dict[str, torch.Tensor]]:
    return {
        name: {k: v.detach().clone() for k, v in block.get_submodule(name).named_parameters(recurse=False)}
        for name in dict.fromkeys(names)
    }


def _restore(block, saved: dict[str, dict[str, torch.Tensor]]) -> None:
    with torch.no_grad():
        for name, params in saved.items():
            module = block.get_submodule(name)
            for key, value in params.items():
                getattr(module, key).copy_(value)


def _close(out: torch.Tensor, reference: torch.Tensor) -> bool:
    scale = reference.abs().max().clamp(min=1e-12)
    return bool(torch.isfinite(out).all()) and float((out - reference).abs().max() / scale) <= FOLD_TOLERANCE
