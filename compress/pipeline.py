"""Running passes: on a model in memory (`apply`), or from a checkpoint into a folder (`compress_checkpoint`).

The CLI and the Python API both come here; there is no second code path.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from compress.artifact import Artifact
from compress.calib import calibration_data
from compress.checkpoint import sha256_file
from compress.errors import BadInput
from compress.model import Model, load, resolve_checkpoint
from compress.progress import resolve as resolve_progress
from compress.recipe import Recipe
from compress.registry import PassContext, get_pass


def apply(
    model: Any, recipe: Any, *, data: Any = None, device: str = "cpu", seed: int = 0, progress=None
) -> Artifact:
    """Apply a recipe (or one pass's settings) to a model in memory and return the Artifact.

    `model` is a path, a `Model` or a `torch.nn.Module`; a module you pass in is copied, not changed.
    `progress`: True for plain text progress (fine in a notebook), or a compress.progress.Progress.

    Example:
        >>> import compress as cz
        >>> art = cz.apply("model.safetensors", cz.Quantize(scheme="int4", group_size=32))  # doctest: +SKIP
        >>> art.save("out/int4")                                                           # doctest: +SKIP
    """
    recipe = Recipe.of(recipe)
    progress = resolve_progress(progress)
    given_object = not isinstance(model, str | Path)
    loaded = load(model, progress=progress)
    if not loaded.runnable:
        raise BadInput(
            f"{loaded.checkpoint}: has no config.json beside it, so it cannot be built as a model; only "
            "passes that work tensor by tensor (quantize with method rtn) run on it."
        )
    module = copy.deepcopy(loaded.module) if given_object else loaded.module
    data = calibration_data(data, loaded)  # a built-in name or a file: loaded with the tokenizer
    ctx = PassContext(data=data, device=device, seed=seed, progress=progress)
    changes: dict[str, dict] = {}
    stats: dict[str, float] = {}
    config = None
    resized = previously_resized(loaded, module)
    for cfg in recipe.passes:
        result = get_pass(cfg.kind).apply(module, cfg, ctx)
        module = result.module
        for name, change in result.changes.items():  # a later pass adds to an earlier one's record
            changes.setdefault(name, {}).update(change)
        resized |= {name for name, change in result.changes.items() if "baseline_shape" in change}
        stats.update(result.stats)
        config = result.config or config
    source = loaded.checkpoint
    out_model = Model(
        module=module,
        family=loaded.family,
        config=config or loaded.config,
        tokenizer=loaded.tokenizer,
    )
    return Artifact(
        model=out_model,
        recipe=recipe.to_list(),
        changes=changes,
        stats=stats,
        source=source,
        source_sha256=sha256_file(source) if source else "",
        config=config,
        resized=frozenset(resized),
    )


def previously_resized(loaded: Model, module) -> set[str]:
    """Tensors an earlier run shrank (a pruned checkpoint loaded again), by their names in `module`."""
    from compress.model import align_names

    declared = list(loaded.compression.resized) if loaded.compression else []
    if not declared:
        return set()
    names = align_names(declared, set(module.state_dict()), getattr(module, "base_model_prefix", ""))
    return set(names.values())


def can_stream(recipe: Recipe) -> bool:
    """True when the recipe is one pass that works tensor by tensor without data."""
    if len(recipe.passes) != 1:
        return False
    cfg = recipe.passes[0]
    spec = get_pass(cfg.kind)
    return spec.stream is not None and not cfg.uses_data()


def compress_checkpoint(
    source: str | Path,
    recipe: Any,
    out_dir: str | Path,
    *,
    data: Any = None,
    device: str = "cpu",
    progress=None,
) -> Artifact:
    """Compress a checkpoint into `out_dir` (streamed tensor by tensor when the recipe allows).

    Example:
        >>> import compress as cz
        >>> int8 = cz.Quantize(scheme="int8")
        >>> cz.compress_checkpoint("model.safetensors", int8, "out/int8")   # doctest: +SKIP
    """
    from compress.streaming import stream_checkpoint

    recipe = Recipe.of(recipe)
    weights = resolve_checkpoint(source)
    if can_stream(recipe):
        cfg = recipe.passes[0]
        return stream_checkpoint(weights, get_pass(cfg.kind), cfg, Path(out_dir), progress=progress)
    artifact = apply(weights, recipe, data=data, device=device, progress=progress)
    artifact.save(out_dir)
    return artifact


def default_output_dir(source: str | Path, label: str) -> Path:
    """`<input folder>-<label>` beside the input folder."""
    weights = resolve_checkpoint(source)
    folder = weights.parent.resolve()
    return folder.parent / f"{folder.name}-{label}"
