"""The runner's last steps: evaluate the candidate against its input, apply the gate, record the run.

The candidate is the written output (or the Artifact in memory), the baseline the input checkpoint
(or the model given). A model without a tokenizer is timed and compared on sample inputs: the ones
given, else the calibration samples the run drew, else a pass's own data (distillation's), else
the evaluation's .npz. Passes that add a section to the report (distillation) do it here.
"""

from __future__ import annotations

import os
from typing import Any

from compress.registry import get_pass


def evaluate_and_gate(
    result, history: Any, progress, *, task: Any = None, inputs: Any = None, command: str = "run"
):
    """Fill `result.report`, `result.verdict` and `result.previous`; append the run to `history`."""
    from compress.eval import evaluate

    plan = result.plan
    e = plan.recipe.evaluation
    candidate = result.weights if result.output is not None else result.artifact
    source = plan.source if plan.source is not None else plan.model
    baseline = next(
        (hook(c) for c in reversed(plan.recipe.passes) if (hook := get_pass(c.kind).baseline) is not None),
        source,
    )
    if plan.recipe.model is not None:  # checkpoints of the user's own class (--module) load into it
        candidate, baseline, source = (_into_class(plan, m) for m in (candidate, baseline, source))
    if inputs is None:
        inputs = sample_inputs(result, e.latency.batch_size)
    arguments = e.arguments() | ({"task": task} if task is not None else {})
    report = evaluate(candidate, baseline, **arguments, inputs=inputs, progress=progress, history=None)
    if plan.recipe.description:  # what the recipe is for (a target's choice and why): said in the report
        report.notes.insert(0, f"recipe {plan.recipe.name}: {plan.recipe.description}")
    report.notes += change_notes(result.artifact.changes if result.artifact is not None else {})
    for cfg in plan.recipe.passes:
        annotate = getattr(get_pass(cfg.kind), "annotate_report", None)
        if annotate is not None:
            annotate(report, result.artifact, cfg, source, e, inputs)
    result.report = report
    _gate(result, history)
    if history is not None:
        history.append(report, command=command, model=plan.source_sha256 or None, verdict=result.verdict)


def _into_class(plan, model: Any) -> Any:
    """A checkpoint path, or a result saved to one, loaded into the recipe's class (--module)."""
    from compress.artifact import Artifact

    if isinstance(model, Artifact) and model.path is not None:
        return plan.load_model(model.path)
    return plan.load_model(model) if isinstance(model, str | os.PathLike) else model


def change_notes(changes: dict[str, dict], shown: int = 4) -> list[str]:
    """One line per distinct note the passes recorded on the tensors they changed or left (why
    structured pruning kept a layer's outputs), naming the layers it applies to:
    "conv3, fc: output channels kept (a model output)"."""
    by_note: dict[str, list[str]] = {}
    for name, change in sorted(changes.items()):
        if change.get("note"):
            by_note.setdefault(change["note"], []).append(name.removesuffix(".weight"))
    lines = []
    for note, layers in by_note.items():
        more = f" and {len(layers) - shown} more" if len(layers) > shown else ""
        lines.append(f"{', '.join(layers[:shown])}{more}: {note}")
    return lines


def _gate(result, history: Any) -> None:
    from compress.gate import gate
    from compress.history import recipe_sha256

    rules = result.plan.recipe.gate
    if not rules:
        return
    previous = None
    if history is not None and any(r.compares_with_previous for r in rules):
        previous = history.last_accepted(result.plan.source_sha256, recipe_sha256(result.report))
    result.previous = previous
    result.verdict = gate(
        result.report,
        rules,
        previous.load_report() if previous else None,
        previous_label=previous.label() if previous else None,
    )


def sample_inputs(result, batch_size: int) -> Any:
    """Inputs to time and compare a model without a tokenizer on (None when it has one)."""
    import torch

    plan = result.plan
    model = result.artifact.model if result.artifact is not None else None
    if model is not None and model.tokenizer is not None:
        return None
    for drawn in result.drawn.values():
        tensors = [s for s in drawn.samples if isinstance(s, torch.Tensor)]
        if tensors:
            return torch.cat(tensors[:batch_size])
    for cfg in plan.recipe.passes:
        hook = getattr(get_pass(cfg.kind), "sample_inputs", None)
        found = hook(cfg, batch_size) if hook is not None else None
        if found is not None:
            return found
    data = plan.recipe.evaluation.data
    if data and str(data).endswith(".npz"):
        from compress.eval.data import load_arrays

        return load_arrays(data, limit=batch_size)[0]
    return None
