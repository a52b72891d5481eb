"""Checking a search before it starts: every input refused here is one sentence, and nothing is written."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compress.errors import BadInput
from compress.recipe import Evaluation, Recipe
from compress.search.space import SearchSpace

DEFAULT_SPACE = Path(__file__).resolve().parents[2] / "recipes" / "search" / "default.yaml"
DEFAULT_TRIALS = 20
_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?$")


@dataclass
class Budget:
    trials: int | None = None
    seconds: float | None = None

    def open(self, finished: int, running: int, elapsed: float) -> bool:
        if self.seconds is not None:
            return elapsed < self.seconds
        return finished + running < (self.trials or DEFAULT_TRIALS)

    def describe(self) -> str:
        if self.seconds is not None:
            return f"{self.seconds:g} s"
        return f"{self.trials or DEFAULT_TRIALS} trials"


def parse_duration(text: str | float | int) -> float:
    """Seconds from '30m', '90s', '1h30m', '45' (seconds); BadInput otherwise."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        seconds = float(text)
    else:
        match = _DURATION.match(str(text).strip())
        if not match or not any(match.groups()):
            raise BadInput(
                f"time budget '{text}': expected a duration such as 30m, 90s, 1h30m or 45 (seconds)."
            )
        h, m, s = (float(g) if g else 0.0 for g in match.groups())
        seconds = h * 3600 + m * 60 + s
    if seconds <= 0:
        raise BadInput(f"time budget '{text}': must be more than zero.")
    return seconds


@dataclass
class Plan:
    """A search checked and resolved; nothing written yet."""

    source: Path
    model_sha256: str
    folder: Path
    space: SearchSpace
    objective: str
    floor: float
    evaluation: Evaluation
    budget: Budget
    workers: int | None
    address: str | None
    resume: bool
    seed: int
    history: Any
    seeds: list[tuple[str, dict]] = field(default_factory=list)  # (name, point) of each seed recipe
    notes: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def latency(self) -> tuple[str, str]:
        return self.evaluation.devices[0], self.evaluation.runtimes[0]

    @property
    def export(self) -> tuple[Any, ...]:
        return export_steps(self.evaluation)


def prepare(
    model: Any,
    output: str | Path,
    min_retention: float,
    objective: str,
    space: Any,
    trials: int | None,
    time_budget: Any,
    workers: int | None,
    address: str | None,
    resume: bool,
    seed: int,
    evaluation: Any,
    history: Any,
) -> Plan:
    """The search these arguments describe, checked: BadInput for the first thing wrong."""
    from compress.checkpoint import sha256_file
    from compress.search.cluster import check_address
    from compress.search.points import Context
    from compress.search.study import OBJECTIVES, check_folder, check_same

    _check_floor(min_retention)
    if objective not in OBJECTIVES:
        raise BadInput(f"objective '{objective}': expected one of {', '.join(OBJECTIVES)}.")
    budget = _budget(trials, time_budget)
    if workers is not None and workers < 1:
        raise BadInput(f"workers: {workers}; a search needs at least one worker.")
    space = _space(space)
    source = _source(model)
    evaluation = _evaluation(evaluation)
    folder = Path(output)
    recorded = check_folder(folder, resume)
    if address:
        check_address(address)
    sha = sha256_file(source)
    seeds, notes = seed_points(space, Context(teacher=str(source), evaluation=evaluation))
    if "onnxruntime" in evaluation.runtimes:
        notes.append(
            "every trial exports its model to ONNX (model.onnx), which ONNX Runtime times, as the shipped "
            "int8-dynamic recipe does; seed recipes run with the search's export steps and evaluation"
        )
    settings = {
        "model": str(source),
        "model_sha256": sha,
        "space_file": space.source,
        "space": space.to_dict(),
        "objective": objective,
        "min_retention": float(min_retention),
        "evaluation": evaluation.to_dict(),
        "seed": seed,
    }
    settings = json.loads(json.dumps(settings))  # as it will read back from settings.json
    if recorded is not None:
        check_same(recorded, settings, folder)
    return Plan(
        source=source,
        model_sha256=sha,
        folder=folder,
        space=space,
        objective=objective,
        floor=float(min_retention),
        evaluation=evaluation,
        budget=budget,
        workers=workers,
        address=address,
        resume=resume,
        seed=seed,
        history=_history(history),
        seeds=[] if resume else seeds,
        notes=notes,
        settings=settings,
    )


def _check_floor(floor: Any) -> None:
    if isinstance(floor, bool) or not isinstance(floor, int | float) or not 0 < floor <= 1:
        raise BadInput(
            f"--min-retention {floor}: the retention floor is a fraction of the original's score, above 0 "
            "and at most 1 (0.99 keeps 99%)."
        )


def _budget(trials: int | None, time_budget: Any) -> Budget:
    if trials is not None and time_budget is not None:
        raise BadInput("give --trials or --time-budget, not both.")
    if trials is not None and (isinstance(trials, bool) or not isinstance(trials, int) or trials < 1):
        raise BadInput(f"--trials {trials}: need at least one trial.")
    return Budget(trials=trials, seconds=parse_duration(time_budget) if time_budget is not None else None)


def _space(space: Any) -> SearchSpace:
    if isinstance(space, SearchSpace):
        return space
    if space is None:
        if not DEFAULT_SPACE.is_file():
            raise BadInput(
                f"no search space given and the default ({DEFAULT_SPACE}) is not here; give one (--space)."
            )
        space = DEFAULT_SPACE
    return SearchSpace.load(space)


def _source(model: Any) -> Path:
    """The checkpoint file, absolute (the workers load it; a model in memory must have come from one)."""
    from compress.model import Model, resolve_checkpoint

    if isinstance(model, Model):
        if model.checkpoint is None or model.checkpoint.suffix != ".safetensors":
            raise BadInput("search: give the model as a checkpoint path; the workers load it from there.")
        model = model.checkpoint
    if not isinstance(model, str | Path):
        raise BadInput(f"search: the model is a checkpoint path, got {type(model).__name__}.")
    return resolve_checkpoint(model).resolve()


def default_runtime() -> str:
    """The runtime a search times on unless told: the one compress recommends for this CPU (the
    runtime of `--target auto`: OpenVINO where it runs here), so that its speedups are those of the
    fastest deployment measured on this class of CPU, and the seed recipes are timed there too."""
    from compress.errors import Unavailable
    from compress.hardware import detect
    from compress.recommend import recommend

    try:
        return recommend(detect()).runtime
    except Unavailable:  # neither OpenVINO nor ONNX Runtime runs here: torch, which always does
        return "torch"


def _evaluation(evaluation: Any) -> Evaluation:
    """The evaluation every trial gets (default: CPU, default_runtime()), timed on a fixed number of
    threads (1 unless it says): each worker gets that many CPUs, and the chosen recipe re-runs timed
    alike."""
    if evaluation is None:
        evaluation = Evaluation(devices=("cpu",), runtimes=(default_runtime(),))
    elif isinstance(evaluation, dict):
        evaluation = Evaluation.from_dict(evaluation, "evaluation")
    elif not isinstance(evaluation, Evaluation):
        raise BadInput(f"search: evaluation is an Evaluation or a dict, got {type(evaluation).__name__}.")
    if not evaluation.devices or not evaluation.runtimes:
        raise BadInput("search: the evaluation needs a device and a runtime to time (e.g. cpu, torch).")
    if evaluation.latency.threads is None:
        evaluation = evaluation.replace(latency=evaluation.latency.replace(threads=1))
    return evaluation


def _history(history: Any):
    from compress.history import History

    if history == "default":
        history = History()
    elif isinstance(history, str | Path):
        history = History(history)
    if history is not None:
        history.check()  # a locked or corrupt database fails now, not after the first trial
    return history


def seed_points(space: SearchSpace, ctx: Any) -> tuple[list[tuple[str, dict]], list[str]]:
    """(name, point) of each seed recipe of the space, and a note for each one outside it."""
    from compress.search.points import point_of

    points, notes = [], []
    for path in space.seeds:
        recipe = Recipe.load(path)
        try:
            points.append((recipe.name, point_of(space, recipe, ctx)))
        except BadInput as exc:
            notes.append(f"seed {path.name} left out: {exc}")
    return points, notes


def export_steps(evaluation: Evaluation) -> tuple[Any, ...]:
    """The export steps every trial gets: ONNX when ONNX Runtime times them, so the graph timed is the
    one a user would deploy (integer kernels for quantized activations), as the shipped recipes do."""
    from compress.exporters import export_config_from_dict

    if "onnxruntime" in evaluation.runtimes:
        return (export_config_from_dict({"format": "onnx"}, "export"),)
    return ()
