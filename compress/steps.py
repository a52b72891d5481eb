"""The roads a pass takes (chosen in compress.plan): streamed, handed to another tool, in memory.

Each returns the Artifact it made and the calibration samples it used (None when it used none),
and records in the plan's recipe what it really drew, so the output recipe and the header say it.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

from compress.artifact import Artifact
from compress.calibration import CalibrationData, draw
from compress.errors import BadInput
from compress.plan import Plan, Step
from compress.registry import PassContext, get_pass
from compress.writer import RECIPE_FILE


def run_streamed(plan: Plan, step: Step, stage: Path, is_output: bool, draws: dict, progress):
    """The first pass of a checkpoint, tensor by tensor (compress.streaming)."""
    from compress.streaming import stream_checkpoint

    assert plan.source is not None
    artifact = stream_checkpoint(
        plan.source,
        get_pass(step.config.kind),
        step.config,
        stage,
        recipe=_recorded(plan, step),
        **_output_files(plan, is_output),
        source_sha256=plan.source_sha256,
        progress=progress,
    )
    return artifact, None


def run_external(plan: Plan, step: Step, stage: Path, is_output: bool, draws: dict, progress):
    """The recipe's only pass, done by another tool on the float checkpoint (compress.backends)."""
    from compress.backends.nncf import compress_with_nncf
    from compress.model import load_tokenizer

    assert plan.source is not None
    data = None
    if step.takes_data:
        tokenizer = load_tokenizer(plan.source.parent)
        data = calibration_for(plan, step, tokenizer, draws)
    artifact = compress_with_nncf(
        plan.source,
        step.config,
        stage,
        data=data,
        recipe=_recorded(plan, step),
        source_sha256=plan.source_sha256,
        **_output_files(plan, is_output),
        progress=progress,
    )
    return artifact, data


def run_in_memory(
    plan: Plan,
    step: Step,
    previous: Artifact | None,
    folder: Path | None,
    draws: dict,
    device: str,
    progress,
) -> tuple[Artifact, CalibrationData | None]:
    """One pass on the model in memory: the previous result, a cache entry, the input checkpoint
    (read block by block when the pass can), or the model given (copied, never changed in place)."""
    from compress.memory import release_free_memory
    from compress.model import Model, load_tokenizer

    spec = get_pass(step.config.kind)
    model, deferred = _input_model(plan, step, previous, folder, spec, progress)
    tokenizer = model.tokenizer
    if tokenizer is None and step.takes_data and model.checkpoint is not None:
        tokenizer = load_tokenizer(model.checkpoint.parent)
    data = calibration_for(plan, step, tokenizer, draws) if step.takes_data else None
    del tokenizer
    if deferred is not None:
        release_free_memory()
    ctx = PassContext(
        data=data, device=device, seed=0, progress=progress, weights=deferred, model_spec=plan.recipe.model
    )
    result = spec.apply(model.module, step.config, ctx)
    if deferred is not None:  # later passes see an ordinary in-memory model
        deferred.finish()
    if model.tokenizer is None and model.checkpoint is not None:
        model.tokenizer = load_tokenizer(model.checkpoint.parent)
    changes = dict(previous.changes) if previous is not None else {}
    for name, change in result.changes.items():  # a later pass adds to an earlier one's record
        changes[name] = {**changes.get(name, {}), **change}
    stats = {**(previous.stats if previous is not None else _stored_stats(model)), **result.stats}
    resized = set(previous.resized) if previous is not None else _previously_resized(model, result.module)
    resized |= {name for name, change in result.changes.items() if "baseline_shape" in change}
    config = result.config or (previous.config if previous is not None else None)
    artifact = Artifact(
        model=Model(
            module=result.module,
            family=model.family,
            config=config or model.config,
            tokenizer=model.tokenizer,
            spec=model.spec,
        ),
        recipe=_recorded(plan, step),
        changes=changes,
        stats=stats,
        source=plan.source or (plan.model.checkpoint if plan.model is not None else None),
        source_sha256=plan.source_sha256,
        config=config,
        resized=frozenset(resized),
    )
    return artifact, data


def calibration_for(plan: Plan, step: Step, tokenizer: Any, draws: dict) -> CalibrationData:
    """The samples a pass calibrates on, drawn once per distinct settings (shared through `draws`),
    and its settings in the plan's recipe replaced by what was really drawn."""
    if plan.data is not None:
        data = plan.data
        asked = plan.recipe.calibration_settings
    else:
        asked = getattr(step.config, "calibration", None) or plan.recipe.calibration_settings
        key = (asked, id(tokenizer) if tokenizer is not None else None)
        if key not in draws:
            draws[key] = draw(asked, tokenizer)
        data = draws[key]
    if hasattr(step.config, "calibration"):
        step.config = step.config.replace(calibration=data.drawn(asked))
        plan.recipe.passes[step.index] = step.config
    return data


def _input_model(plan: Plan, step: Step, previous: Artifact | None, folder: Path | None, spec, progress):
    """(Model, DeferredWeights or None): what this pass runs on."""
    if previous is not None and previous.model is not None and previous.model.module is not None:
        return previous.model, None
    if folder is not None:
        return _loaded(plan, folder / "model.safetensors", step, spec, progress)
    if plan.model is not None:
        return dataclasses.replace(plan.model, module=copy.deepcopy(plan.model.module)), None
    assert plan.source is not None
    return _loaded(plan, plan.source, step, spec, progress)


def _loaded(plan: Plan, weights: Path, step: Step, spec, progress):
    if spec.deferred and step.takes_data and step.index == 0 and plan.recipe.model is None:
        # The pass reads the model block by block; the tokenizer is loaded only to draw calibration
        # samples and freed before the weights are read (a 262k vocabulary is a third of a small model).
        from compress.deferred import load_deferred

        return load_deferred(weights, tokenizer=False)
    model = plan.load_model(weights, progress=progress)
    if not model.runnable:
        raise BadInput(
            f"{model.checkpoint}: has no config.json beside it, so it cannot be built as a model; name "
            "its class with --module FILE.py:ClassName, or use only passes that work tensor by tensor "
            "(quantize with method rtn, mse or hqq)."
        )
    return model, None


def _recorded(plan: Plan, step: Step) -> list[dict]:
    """The passes that made this result, as recorded in its header: the input's through this one."""
    return [p.to_dict() for p in plan.recipe.passes[: step.index + 1]]


def _output_files(plan: Plan, is_output: bool) -> dict:
    """The recipe file and export steps of a road that writes straight into the output folder."""
    if not is_output:
        return {}
    return {"extra": {RECIPE_FILE: plan.recipe.to_yaml()}, "exports": list(plan.recipe.export)}


def _stored_stats(model) -> dict:
    return dict(model.compression.stats) if model.compression else {}


def _previously_resized(loaded, module) -> set[str]:
    """Tensors an earlier run shrank (a pruned checkpoint loaded again), by their names in `module`."""
    from compress.model import align_names

    declared = list(loaded.compression.resized) if loaded.compression else []
    if not declared:
        return set()
    names = align_names(declared, set(module.state_dict()), getattr(module, "base_model_prefix", ""))
    return set(names.values())
