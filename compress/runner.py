"""Running a recipe: plan the steps, reuse cached intermediate results, compress, evaluate, gate.

Each pass's result is kept in a cache folder addressed by what produced it: the input's sha256,
the settings of every pass up to and including this one, the calibration settings when a pass used
data, and the compress version. A failed later step (or a changed evaluation or gate) therefore re-runs
without redoing the earlier passes. The same API as the single commands does the work:
`pipeline.compress_checkpoint` / `pipeline.apply` for the passes and `eval.evaluate` for the report.
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
from compress.config import PassConfig
from compress.errors import BadInput
from compress.recipe import Recipe
from compress.targets import Targets

CACHE_ENV = "COMPRESS_CACHE"
DEFAULT_CACHE = Path(".compress") / "cache"
STEP_FILE = "step.json"  # written last into a cache entry: an entry without it is not used
RECIPE_FILE = "recipe.yaml"  # the resolved recipe, saved inside the output folder


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)


@dataclass
class Step:
    index: int
    config: PassConfig
    key: str
    folder: Path | None  # its cache entry; None when caching is off

    @property
    def cached(self) -> bool:
        return self.folder is not None and (self.folder / STEP_FILE).is_file()


@dataclass
class Plan:
    """What `run_recipe` will do, resolved and checked before any pass runs."""

    recipe: Recipe
    source: Path  # the input weights file
    source_sha256: str
    output: Path
    steps: list[Step]

    def rows(self) -> list[tuple[str, str, str, str, str]]:
        """(#, pass, settings, data, cache) for a table."""
        out = []
        for s in self.steps:
            describe = getattr(s.config, "describe", None)
            settings = describe() if callable(describe) else _short(s.config)
            data = "yes" if s.config.uses_data() else "no"
            cache = "off" if s.folder is None else ("reused" if s.cached else "to run")
            out.append((str(s.index), s.config.kind, settings, data, f"{cache} ({s.key[:12]})"))
        return out


@dataclass
class RunResult:
    plan: Plan
    output: Path  # the folder holding model.safetensors and recipe.yaml
    report: Any | None = None  # compress.report.Report
    verdict: Any | None = None  # compress.gate.Verdict
    previous: Any | None = None  # compress.history.Run the regression rules compared with
    steps_run: list[int] = field(default_factory=list)
    steps_reused: list[int] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def weights(self) -> Path:
        weights = self.output / "model.safetensors"
        graph = self.output / "model.onnx"  # a backend's output has no safetensors (compress.backends)
        return graph if not weights.exists() and graph.exists() else weights


def plan_run(
    recipe: Recipe | str | Path,
    source: str | Path,
    output: str | Path | None = None,
    *,
    cache: Any = "default",
) -> Plan:
    """Resolve and check everything a run needs: recipe, pass order, targets, input hash, cache hits.

    `cache` is a folder, "default" (COMPRESS_CACHE or .compress/cache) or None (keep nothing).
    """
    from compress.artifact import check_output_folder
    from compress.checkpoint import SafetensorsFile, sha256_file
    from compress.layers import select_checkpoint_tensors
    from compress.model import resolve_checkpoint
    from compress.pipeline import default_output_dir

    if not isinstance(recipe, Recipe):
        recipe = Recipe.load(recipe)
    recipe.check_order()
    weights = resolve_checkpoint(source)
    file = SafetensorsFile(weights)
    for i, cfg in enumerate(recipe.passes):  # a target that matches nothing fails now, not after hours
        targets = getattr(cfg, "targets", None)
        if isinstance(targets, Targets):
            select_checkpoint_tensors(file, targets, f"passes[{i}] ({cfg.kind})")
    _check_data_files(recipe)
    out = Path(output) if output else default_output_dir(weights, recipe.name or "recipe")
    check_output_folder(out, weights)
    digest = sha256_file(weights)
    root = default_cache_dir() if cache == "default" else (Path(cache) if cache else None)
    steps = []
    for i, cfg in enumerate(recipe.passes):
        key = step_key(digest, recipe, i)
        steps.append(Step(i, cfg, key, root / key if root else None))
    return Plan(recipe, weights, digest, out, steps)


def _check_data_files(recipe: Recipe) -> None:
    """A data file named in the recipe that is not there fails now, not after the passes."""
    from compress.eval.data import BUILTIN, BUILTIN_TEXT

    named = [("evaluate.data", recipe.evaluation.data)]
    if recipe.uses_data():
        named.append(("calibration.data", recipe.calibration.data))
    for setting, name in named:
        if name and name not in BUILTIN and name not in BUILTIN_TEXT and not Path(name).is_file():
            known = ", ".join([*BUILTIN, *BUILTIN_TEXT])
            raise BadInput(f"{setting}: {name}: no such file (built-in data sets: {known}).")


def step_key(source_sha256: str, recipe: Recipe, index: int) -> str:
    """The content address of the result of passes[0..index] applied to the input."""
    from compress.formats import FORMAT_VERSION
    from compress.history import canonical_sha256

    passes = recipe.passes[: index + 1]
    return canonical_sha256(
        {
            "source_sha256": source_sha256,
            "passes": [p.to_dict() for p in passes],
            "calibration": recipe.calibration.to_dict() if any(p.uses_data() for p in passes) else None,
            "compress": __version__,
            "format": FORMAT_VERSION,
        }
    )


def run_recipe(
    recipe: Recipe | str | Path,
    source: str | Path,
    output: str | Path | None = None,
    *,
    cache: Any = "default",
    history: Any | None = None,
    evaluate: bool = True,
    progress=None,
) -> RunResult:
    """Run a recipe on a checkpoint: passes (reusing cached steps), evaluation, gate, history row.

    `history` is a compress.history.History to append the report to and to find the previous
    accepted run in (for rules with max_regression); None keeps no history.

    Example:
        >>> from compress.runner import run_recipe
        >>> result = run_recipe("recipes/int8-weight-only.yaml", "model.safetensors")  # doctest: +SKIP
        >>> result.verdict.passed, result.report.metric("size.ratio")                 # doctest: +SKIP
    """
    started = time.perf_counter()
    plan = plan_run(recipe, source, output, cache=cache)
    result = RunResult(plan=plan, output=plan.output)
    with _step_root(plan) as steps:
        data = None
        previous_folder: Path | None = None
        for step in steps:
            if step.cached:
                result.steps_reused.append(step.index)
            else:
                if step.config.uses_data() and data is None:
                    data = _calibration(plan)
                _run_step(plan, step, previous_folder, data, progress)
                result.steps_run.append(step.index)
            previous_folder = step.folder
        _assemble_output(plan, previous_folder)
    if evaluate:
        _evaluate_and_gate(result, history, progress)
    result.seconds = time.perf_counter() - started
    return result


@contextlib.contextmanager
def _step_root(plan: Plan) -> Iterator[list[Step]]:
    """The plan's steps; with caching off, their results live in a temporary folder for this run."""
    if all(s.folder is not None for s in plan.steps):
        yield plan.steps
        return
    plan.output.parent.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix=".compress-steps.partial-", dir=plan.output.parent))
    try:
        yield [Step(s.index, s.config, s.key, root / s.key) for s in plan.steps]
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _run_step(plan: Plan, step: Step, previous_folder: Path | None, data: Any, progress) -> None:
    from compress.model import WEIGHTS_NAME
    from compress.pipeline import apply, compress_checkpoint

    started = time.perf_counter()
    step_data = data if step.config.uses_data() else None
    assert step.folder is not None
    with _cache_entry(step.folder) as stage:
        if previous_folder is None:
            compress_checkpoint(plan.source, [step.config], stage, data=step_data, progress=progress)
        else:
            artifact = apply(previous_folder / WEIGHTS_NAME, [step.config], data=step_data, progress=progress)
            # The result descends from the original input through every pass so far.
            artifact.recipe = [p.to_dict() for p in plan.recipe.passes[: step.index + 1]]
            artifact.source_sha256 = plan.source_sha256
            artifact.save(stage)
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


def _assemble_output(plan: Plan, last: Path | None) -> None:
    """The output folder: the last step's files (hard-linked when possible) and the resolved recipe."""
    from compress.checkpoint import atomic_output_dir

    assert last is not None
    with atomic_output_dir(plan.output) as stage:
        for item in sorted(last.rglob("*")):
            if item.is_dir() or item.name == STEP_FILE:
                continue
            target = stage / item.relative_to(last)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(item, target)
            except OSError:  # another file system, or links not allowed
                shutil.copy2(item, target)
        (stage / RECIPE_FILE).write_text(plan.recipe.to_yaml())


def _calibration(plan: Plan):
    from compress.calib import load_calibration
    from compress.model import load_tokenizer

    c = plan.recipe.calibration
    tokenizer = None if c.data.endswith(".npz") else load_tokenizer(plan.source.parent)
    return load_calibration(c.data, tokenizer=tokenizer, n_samples=c.samples, seq_len=c.seq_len, seed=c.seed)


def _evaluate_and_gate(result: RunResult, history: Any | None, progress) -> None:
    from compress.eval import evaluate
    from compress.gate import gate
    from compress.history import recipe_sha256

    plan = result.plan
    report = evaluate(result.weights, plan.source, **plan.recipe.evaluation.arguments(), progress=progress)
    result.report = report
    rules = plan.recipe.gate
    if rules:
        previous = None
        if history is not None and any(r.compares_with_previous for r in rules):
            previous = history.last_accepted(plan.source_sha256, recipe_sha256(report))
        result.previous = previous
        result.verdict = gate(
            report,
            rules,
            previous.load_report() if previous else None,
            previous_label=previous.label() if previous else None,
        )
    if history is not None:
        history.append(report, command="run", model=plan.source_sha256, verdict=result.verdict)


def _short(cfg: PassConfig) -> str:
    settings = {k: v for k, v in cfg.to_dict().items() if k not in ("kind", "targets")}
    return ", ".join(f"{k}={v}" for k, v in settings.items())
