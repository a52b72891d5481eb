"""The one runner: every command and every API verb builds a Recipe and comes here.

`run(recipe, source, output)` plans the run (compress.plan), runs each pass on its road (streamed,
handed to another tool, or in memory), reuses and fills the step cache, writes the output folder
through the one writer with the export steps and the resolved recipe, then evaluates, gates and
records the report in the history. `compress quantize`, `compress prune`, `compress distill`,
`compress run`, `compress sweep`, `cz.quantize`, `cz.apply`, `cz.sweep` and `cz.run_recipe` differ
only in the recipe they build and in what they do with the result.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compress._version import __version__
from compress.artifact import Artifact
from compress.plan import STEP_FILE, Plan, Step, plan_run

HISTORY_DEFAULT = "default"  # the history database at COMPRESS_HISTORY or .compress/history.db


@dataclass
class RunResult:
    plan: Plan
    output: Path | None  # the folder holding model.safetensors and recipe.yaml; None: in memory only
    artifact: Artifact | None = None
    report: Any | None = None  # compress.report.Report
    verdict: Any | None = None  # compress.gate.Verdict
    previous: Any | None = None  # compress.history.Run the regression rules compared with
    steps_run: list[int] = field(default_factory=list)
    steps_reused: list[int] = field(default_factory=list)
    seconds: float = 0.0
    drawn: dict[int, Any] = field(default_factory=dict)  # step index -> CalibrationData it used

    @property
    def weights(self) -> Path | None:
        if self.output is None:
            return None
        weights = self.output / "model.safetensors"
        graph = self.output / "model.onnx"  # a backend's output has no safetensors (compress.backends)
        return graph if not weights.exists() and graph.exists() else weights


@dataclass
class _State:
    """The result so far: in memory (a pass ran here), on disk (a cache entry or the output), or both."""

    artifact: Artifact | None = None
    folder: Path | None = None


def run(
    recipe: Any,
    source: Any,
    output: str | Path | None = None,
    *,
    data: Any = None,
    cache: Any = None,
    history: Any = None,
    evaluate: bool = True,
    device: str = "cpu",
    progress=None,
    task: Any = None,
    inputs: Any = None,
    draws: dict | None = None,
    command: str = "run",
) -> RunResult:
    """Run a recipe on a model: its passes, its export steps, its evaluation, gate and history row.

    `source`: a checkpoint path, a compress Model or a torch.nn.Module (never changed in place).
    `output`: the folder to write (None: the result stays in memory, `result.artifact`).
    `data`: calibration data replacing the recipe's (a path or built-in name, or samples in memory).
    `cache`: a folder, "default" or None (see compress.plan). `history`: a compress.history.History,
    "default" (COMPRESS_HISTORY or .compress/history.db) or None. `evaluate`: run the recipe's
    evaluation and gate. `task`, `inputs`: a Task picked once by a sweep, sample inputs for a model
    without a tokenizer. `draws`: a dict shared between runs so equal calibration settings draw once.
    """
    from compress.outputs import output_lock
    from compress.progress import resolve as resolve_progress

    started = time.perf_counter()
    progress = resolve_progress(progress)
    plan = plan_run(recipe, source, output, data=data, cache=cache)
    history = _history(history) if evaluate else None
    if history is not None:
        history.check()  # a locked or corrupt database fails before any work
    result = RunResult(plan=plan, output=plan.output)
    # One writer per output, from the first pass to the history row: a second run into the same
    # folder is refused rather than replacing it while this one evaluates it.
    with output_lock(plan.output) if plan.output is not None else contextlib.nullcontext():
        _run_passes(plan, result, {} if draws is None else draws, device, progress)
        if evaluate:
            from compress.evaluation import evaluate_and_gate

            evaluate_and_gate(result, history, progress, task=task, inputs=inputs, command=command)
    result.seconds = time.perf_counter() - started
    return result


def _run_passes(plan: Plan, result: RunResult, draws: dict, device: str, progress) -> None:
    """Each pass on its road, reusing cached steps; the output folder and the Artifact."""
    state = _State()
    for step in plan.steps:
        if step.cached:
            result.steps_reused.append(step.index)
            state = _State(folder=step.folder)
            continue
        state = _run_step(plan, step, state, result, draws, device, progress)
        result.steps_run.append(step.index)
    result.artifact = _finish(plan, state, progress)


def _history(history: Any):
    if history == HISTORY_DEFAULT:
        from compress.history import History

        return History()
    return history or None


def _run_step(
    plan: Plan, step: Step, state: _State, result: RunResult, draws: dict, device, progress
) -> _State:
    from compress.steps import run_external, run_in_memory, run_streamed

    started = time.perf_counter()
    if step.road in ("stream", "external"):
        road = run_streamed if step.road == "stream" else run_external
        with _target_folder(plan, step) as (stage, final, keep):
            artifact, drawn = road(plan, step, stage, final == plan.output, draws, progress)
            _finish_entry(plan, step, stage, started)
        artifact.path = final / artifact.path.name
        artifact.keep = keep
        _note_draw(result, step, drawn)
        return _State(artifact=artifact, folder=final)
    artifact, drawn = run_in_memory(plan, step, state.artifact, state.folder, draws, device, progress)
    _note_draw(result, step, drawn)
    if step.folder is None:
        return _State(artifact=artifact)
    with _cache_entry(step.folder) as stage:
        artifact.save(stage)
        _finish_entry(plan, step, stage, started)
    artifact.path = step.folder / artifact.path.name
    return _State(artifact=artifact, folder=step.folder)


def _note_draw(result: RunResult, step: Step, drawn: Any) -> None:
    if drawn is not None:
        result.drawn[step.index] = drawn


@contextlib.contextmanager
def _target_folder(plan: Plan, step: Step) -> Iterator[tuple[Path, Path, Any]]:
    """Where a streamed or handed-over pass writes (stage, final folder, what keeps it alive): its
    cache entry, else the output folder (written atomically by the writer), else a temporary folder
    that lives as long as the Artifact (a result asked for in memory)."""
    if step.folder is not None:
        with _cache_entry(step.folder) as stage:
            yield stage, step.folder, None
    elif plan.output is not None:
        yield plan.output, plan.output, None
    else:
        keep = tempfile.TemporaryDirectory(prefix="compress-result-")
        folder = Path(keep.name) / "model"
        yield folder, folder, keep


def _finish_entry(plan: Plan, step: Step, stage: Path, started: float) -> None:
    if step.folder is None:
        return
    record = {
        "key": step.key,
        "source_sha256": plan.source_sha256,
        "passes": [p.to_dict() for p in plan.recipe.passes[: step.index + 1]],
        "compress": __version__,
        "seconds": time.perf_counter() - started,
    }
    (stage / STEP_FILE).write_text(json.dumps(record, indent=2) + "\n")


@contextlib.contextmanager
def _cache_entry(final: Path) -> Iterator[Path]:
    """Yield a folder to fill; it becomes `final` in one rename, so an entry is complete or absent."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name[:12]}.partial-", dir=final.parent))
    try:
        yield tmp / "entry"
        if final.exists():  # left by an interrupted older run, or made meanwhile by a parallel one
            if (final / STEP_FILE).is_file():
                return
            shutil.rmtree(final)
        os.rename(tmp / "entry", final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _finish(plan: Plan, state: _State, progress) -> Artifact:
    """The output folder (when asked for) and the Artifact handed back to the caller."""

    artifact = state.artifact or _read_back(plan, state.folder)
    artifact.exports = list(plan.recipe.export)
    artifact.recipe_file = plan.recipe.to_yaml()
    if plan.output is None or state.folder == plan.output:  # in memory, or written straight there
        return artifact
    artifact.save(plan.output, progress=progress)
    return artifact


def _read_back(plan: Plan, folder: Path | None) -> Artifact:
    """An Artifact for a result that exists only on disk (a cache entry reused by an in-memory run)."""
    assert folder is not None
    model = plan.load_model(folder / "model.safetensors")
    info = model.compression
    return Artifact(
        model=model,
        recipe=info.recipe if info else [],
        stats=dict(info.stats) if info else {},
        source_sha256=info.source_sha256 if info else "",
        path=model.checkpoint,
    )
