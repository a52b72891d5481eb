"""Running passes: on a model in memory (`apply`), or from a checkpoint into a folder (`compress_checkpoint`).

The CLI and the Python API both come here; there is no second code path.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from compress.artifact import Artifact
from compress.checkpoint import sha256_file
from compress.errors import BadInput
from compress.memory import release_free_memory
from compress.model import Model, load, load_tokenizer, resolve_checkpoint
from compress.progress import resolve as resolve_progress
from compress.recipe import Recipe
from compress.registry import PassContext, get_pass


def apply(
    model: Any,
    recipe: Any,
    *,
    data: Any = None,
    device: str = "cpu",
    seed: int = 0,
    progress=None,
    keep_tokenizer: bool = True,
) -> Artifact:
    """Apply a recipe (or one pass's settings) to a model in memory and return the Artifact.

    `model` is a path, a `Model` or a `torch.nn.Module`; a module you pass in is copied, not changed.
    `data` is calibration data for passes that need it: a path or built-in name, a tensor, a list of
    samples, or `compress.calib.CalibrationData`; without it such passes use their `calib` settings.
    `keep_tokenizer=False` leaves a model read block by block without its tokenizer (for callers that
    save the result and need no text from it in this process).
    `progress`: True for plain text progress (fine in a notebook), or a compress.progress.Progress.

    Example:
        >>> import compress as cz
        >>> art = cz.apply("model.safetensors", cz.Quantize(scheme="int4", group_size=32))  # doctest: +SKIP
        >>> art.save("out/int4")                                                           # doctest: +SKIP
    """
    recipe = Recipe.of(recipe)
    progress = resolve_progress(progress)
    given_object = not isinstance(model, str | Path)
    deferred = None
    if not given_object and _can_defer(recipe):
        # The pass reads the model block by block; the tokenizer is loaded only to draw calibration
        # samples and freed before the weights are read (a 262k vocabulary is a third of a small model).
        from compress.deferred import load_deferred

        loaded, deferred = load_deferred(resolve_checkpoint(model), tokenizer=False)
    else:
        loaded = load(model, progress=progress)
    if not loaded.runnable:
        raise BadInput(
            f"{loaded.checkpoint}: has no config.json beside it, so it cannot be built as a model; only "
            "passes that work tensor by tensor (quantize with method rtn, mse or hqq) run on it."
        )
    module = copy.deepcopy(loaded.module) if given_object else loaded.module
    changes: dict[str, dict] = {}
    stats: dict[str, float] = {}
    recorded: list[dict] = []
    config = None
    resized = previously_resized(loaded, module)
    for cfg in recipe.passes:
        tokenizer = loaded.tokenizer
        if tokenizer is None and cfg.uses_data() and loaded.checkpoint is not None:
            tokenizer = load_tokenizer(loaded.checkpoint.parent)
        cfg, calibration = _calibration(cfg, data, tokenizer)
        del tokenizer
        if deferred is not None:
            release_free_memory()
        recorded.append(cfg.to_dict())
        ctx = PassContext(data=calibration, device=device, seed=seed, progress=progress, weights=deferred)
        result = get_pass(cfg.kind).apply(module, cfg, ctx)
        if deferred is not None:  # later passes see an ordinary in-memory model
            deferred.finish()
            deferred = None
        module = result.module
        for name, change in result.changes.items():  # a later pass adds to an earlier one's record
            changes.setdefault(name, {}).update(change)
        resized |= {name for name, change in result.changes.items() if "baseline_shape" in change}
        stats.update(result.stats)
        config = result.config or config
    if loaded.tokenizer is None and keep_tokenizer and loaded.checkpoint is not None:
        loaded.tokenizer = load_tokenizer(loaded.checkpoint.parent)
    source = loaded.checkpoint
    out_model = Model(
        module=module,
        family=loaded.family,
        config=config or loaded.config,
        tokenizer=loaded.tokenizer,
    )
    return Artifact(
        model=out_model,
        recipe=recorded,
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


def _can_defer(recipe: Recipe) -> bool:
    """True when the first pass reads the model block by block (data-aware passes that support it)."""
    if not recipe.passes:
        return False
    first = recipe.passes[0]
    return get_pass(first.kind).deferred and first.uses_data()


def _calibration(cfg: Any, data: Any, tokenizer: Any) -> tuple[Any, Any]:
    """The calibration data for one pass (None when it needs none), and its settings as recorded:
    data given as a path replaces the source named in the settings."""
    from compress.calib import CalibrationSettings, resolve_calibration

    if not cfg.uses_data():
        # No statistics needed, but a pass may still trace the model with samples given in memory
        # (structured pruning; batch-norm recalibration). A path is only read for passes that use it.
        if data is None or isinstance(data, str | Path):
            return cfg, None
        return cfg, resolve_calibration(data, CalibrationSettings(), tokenizer)
    settings = getattr(cfg, "calib", None)
    if data is None and not isinstance(settings, CalibrationSettings):
        return cfg, None  # a pass with no calibration settings of its own says what data it needs
    if not isinstance(settings, CalibrationSettings):
        settings = CalibrationSettings()
    calibration = resolve_calibration(data, settings, tokenizer)
    if isinstance(data, str | Path) and hasattr(cfg, "calib"):
        cfg = cfg.replace(calib=settings.replace(source=str(data)))
    elif data is not None and hasattr(cfg, "calib"):
        drawn = {"source": calibration.source, "samples": len(calibration), "seed": calibration.seed}
        if calibration.seq_len is not None:
            drawn["seq_len"] = calibration.seq_len
        cfg = cfg.replace(calib=settings.replace(**drawn))
    return cfg, calibration


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
    from compress.backends import backend_pass
    from compress.streaming import stream_checkpoint

    recipe = Recipe.of(recipe)
    weights = resolve_checkpoint(source)
    handed = backend_pass(recipe)
    if handed is not None:  # another tool does the work (compress.backends)
        from compress.backends.nncf import compress_with_nncf

        return compress_with_nncf(weights, handed, Path(out_dir), data=data, progress=progress)
    if can_stream(recipe):
        cfg = recipe.passes[0]
        return stream_checkpoint(weights, get_pass(cfg.kind), cfg, Path(out_dir), progress=progress)
    artifact = apply(weights, recipe, data=data, device=device, progress=progress, keep_tokenizer=False)
    artifact.save(out_dir)
    return artifact


def default_output_dir(source: str | Path, label: str) -> Path:
    """`<input folder>-<label>` beside the input folder."""
    weights = resolve_checkpoint(source)
    folder = weights.parent.resolve()
    return folder.parent / f"{folder.name}-{label}"
