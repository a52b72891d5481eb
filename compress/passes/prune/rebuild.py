"""Rewriting a transformers config after structured pruning, so the checkpoint loads as a smaller model.

A config field (intermediate_size, num_key_value_heads, ...) is rewritten when every pruned group
that had its value as a size now has one same new size, and a model built from the rewritten config
(on the meta device: structure only) matches more of the pruned shapes without breaking any other.
No field is named here; the search is by value, checked by construction.

What a config cannot express stays declared in the checkpoint header (`compress.resized`), and the
loader shrinks those tensors after building the architecture: different sizes per layer (a global
budget), or BERT's head count (which also sets its head size, so it cannot change). transformers
alone does not read that key (it warns of a size mismatch and re-initialises those weights at
random); compress.load reads it.

Either way the result is checked for real: a model built from the saved config and loaded with the
pruned weights must reproduce the pruned model's outputs.
"""

from __future__ import annotations

import copy
from typing import Any

from compress.errors import CompressError


def rewrite_config(module, plan, sample, expected) -> Any | None:
    """The rewritten config, or None when the original one (plus declared shapes) must stay."""
    config = getattr(module, "config", None)
    if config is None or not hasattr(config, "to_dict") or not hasattr(module, "base_model_prefix"):
        return None
    actual = {n: tuple(t.shape) for n, t in module.state_dict().items()}
    wrong = mismatches(config, actual)
    if wrong is None:
        return None
    exact = size_changes(plan)
    current = config
    for key, value in config.to_dict().items():
        new = None if isinstance(value, bool) or not isinstance(value, int) else candidate(value, plan, exact)
        if new is None:
            continue
        trial = copy.deepcopy(current)
        setattr(trial, key, new)
        found = mismatches(trial, actual)
        if found is not None and found < wrong:
            current, wrong = trial, found
    if current is config or not reproduces(current, module, sample, expected, actual, wrong):
        return None
    return current


def size_changes(plan) -> dict[int, int]:
    """Old size -> new size, for sizes that every pruned group changed the same way."""
    seen: dict[int, set[int]] = {}
    for group, kept in zip(plan.groups, plan.keep, strict=True):
        seen.setdefault(group.size, set()).add(len(kept))
        for m in group.members:
            seen.setdefault(m.outer * group.size * m.inner, set()).add(m.outer * len(kept) * m.inner)
    return {old: next(iter(new)) for old, new in seen.items() if len(new) == 1 and old not in new}


def candidate(value: int, plan, exact: dict[int, int]) -> int | None:
    """The new value to try for a config field: an exact size change, or, when every group kept the
    same fraction, the value scaled by it (a count of query heads when whole key/value groups go)."""
    if value in exact:
        return exact[value]
    ratios = {(g.size, len(k)) for g, k in zip(plan.groups, plan.keep, strict=True)}
    if len(ratios) != 1:
        return None
    size, kept = ratios.pop()
    if kept == size or value <= 1 or value % size or (value * kept) % size:
        return None
    return value * kept // size


def mismatches(config, actual: dict[str, tuple]) -> set[str] | None:
    """Names whose shape differs between the pruned model and one built from `config` (None: no build)."""
    import torch

    from compress.model import architecture_class

    try:
        with torch.device("meta"):
            built = architecture_class(config)(config)
    except Exception:  # a trial value this architecture rejects (e.g. a head count that does not divide)
        return None
    shapes = {n: tuple(t.shape) for n, t in built.state_dict().items()}
    if set(shapes) != set(actual):
        return None
    return {n for n, s in shapes.items() if actual[n] != s}


def reproduces(config, module, sample, expected, actual: dict, wrong: set[str]) -> bool:
    """Whether a model built from `config` (plus the declared shapes) runs like the pruned one."""
    import torch

    from compress.model import build_module
    from compress.passes.prune.reproduce import TOLERANCE, main_output_of, relative_difference

    try:
        rebuilt, _ = build_module(
            config, dict(module.state_dict()), "pruned model", resized={n: actual[n] for n in wrong}
        )
        with torch.inference_mode():
            out = main_output_of(rebuilt, sample)
    except (CompressError, RuntimeError, ValueError):
        return False
    return relative_difference(out, expected) <= TOLERANCE
