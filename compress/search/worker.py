"""What runs on a Ray worker of a search: the model loaded once, each trial a run of the one runner.

A worker is a Ray actor. It loads the checkpoint once and keeps it (with the task that scores it, whose
baseline work is done once), then runs each trial's recipe with `compress.runner.run` on that model in
memory and hands back the report. On the driver's node it reads the checkpoint where it is; on any
other node it writes the files shipped through Ray's object store (fetched once per node, shared by
the workers there) into one local folder per node, the first worker there writing it.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Files beside the weights that a model needs (config, tokenizer, ...): everything up to this size.
SHIPPED_MAX_BYTES = 64 * 1024 * 1024
COMPLETE = ".complete"


@dataclass(frozen=True)
class Setup:
    """What every worker of a search is told (small; the files travel in the payload)."""

    weights: str  # the checkpoint file, as the driver names it
    sha256: str  # of the checkpoint: names the folder the files are written to on another node
    data: tuple[str, ...]  # data files the trials read, as the driver names them
    driver_node: str  # Ray node id of the driver ("" outside Ray)
    threads: int
    evaluation: dict[str, Any]
    scratch: str  # this search's scratch folder name (trials write there; removed when the search ends)


def node_folder(name: str) -> Path:
    """A folder of the searches on this node's disk: the files shipped to it (named by the checkpoint's
    hash), and each search's scratch, where its trials write their models (one folder per search, so
    that a trial whose worker was killed leaves nothing once the search ends)."""
    return Path(tempfile.gettempdir()) / "compress-search" / name


def payload(weights: Path, data: tuple[str, ...]) -> dict[str, Any]:
    """The checkpoint folder's files (the weights and everything small beside them) and the data files,
    as bytes: what a worker on another node writes to its local disk."""
    files = {weights.name: weights.read_bytes()}
    for path in sorted(weights.parent.iterdir()):
        if path.is_file() and path != weights and path.stat().st_size <= SHIPPED_MAX_BYTES:
            files[path.name] = path.read_bytes()
    return {"model": files, "data": {name: Path(name).read_bytes() for name in data}}


def node_id() -> str:
    try:
        import ray

        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""
    except ImportError:
        return ""


class TrialWorker:
    """A Ray actor (wrapped with ray.remote by compress.search.cluster): one loaded model, many trials."""

    def __init__(self, setup: Setup, shipped: list[Any]):
        import torch

        from compress.eval.tasks import pick_task
        from compress.model import load
        from compress.recipe import Evaluation

        torch.set_num_threads(setup.threads)
        self.setup = setup
        self.folder: Path | None = None
        self.scratch = node_folder(setup.scratch)
        self.paths = self._localize(shipped)
        self.model = load(self.paths.get(setup.weights, setup.weights))
        self.evaluation = Evaluation.from_dict(setup.evaluation, "evaluate")
        e = self.evaluation
        data = self.paths.get(e.data, e.data) if e.data else None
        self.task, self.why = pick_task(self.model, e.task, data, limit=e.limit, options=e.task_options)

    def info(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "node": node_id(),
            "host": socket.gethostname(),
            "shipped": bool(self.folder),
        }

    def run(self, recipe_yaml: str) -> dict[str, Any]:
        """Run one trial's recipe into a scratch folder; {'report': ...} or {'error': one sentence,
        'bad_setting': bool}."""
        from compress.errors import CompressError
        from compress.recipe import Recipe
        from compress.runner import run

        started = time.perf_counter()
        try:
            recipe = _relocate(Recipe.loads(recipe_yaml, "trial recipe"), self.paths)
            # Written to a folder and measured there, as `compress run` writes it: the size is the file's.
            self.scratch.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(prefix="trial-", dir=self.scratch) as scratch:
                result = run(
                    recipe,
                    self.model,
                    Path(scratch) / "model",
                    task=self.task,
                    history=None,
                    command="search",
                )
        except CompressError as exc:
            return {"error": str(exc), "bad_setting": True, "seconds": time.perf_counter() - started}
        except Exception as exc:  # a trial that fails is reported, never fatal to the search
            where = traceback.extract_tb(exc.__traceback__)[-1]
            text = f"{type(exc).__name__}: {exc} (at {Path(where.filename).name}:{where.lineno})"
            return {"error": text, "bad_setting": False, "seconds": time.perf_counter() - started}
        report = result.report
        if self.task is not None:  # say why the task was picked, as `compress eval` does
            given = f"task '{self.task.name}' as given"
            report.notes = [self.why if note == given else note for note in report.notes]
        return {"report": report.to_dict(), "seconds": time.perf_counter() - started, "pid": os.getpid()}

    def sensitivity(self, measure: dict[str, Any]) -> list[dict[str, Any]]:
        from compress.search.sensitivity import measure as measure_layers
        from compress.search.space import Measure

        settings = Measure.from_dict(measure, "quantize.mixed_precision.measure")
        data = self.paths.get(settings.data, settings.data)
        return measure_layers(self.model, settings.replace(data=data))

    def close(self) -> None:
        """Remove the files written on this node, shipped or left by a killed trial (every worker there
        may call it; the first one does)."""
        shutil.rmtree(self.scratch, ignore_errors=True)
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)

    def _localize(self, shipped: list[Any]) -> dict[str, str]:
        """Driver paths -> paths on this node: the same on the driver's node, else the shipped copies."""
        s = self.setup
        files = shipped[0]
        if files is None or (s.driver_node and node_id() == s.driver_node):
            return {}  # nothing shipped (Ray started here, one node), or the driver's node: read in place
        if not isinstance(files, dict):  # an ObjectRef: fetched once per node into its object store
            import ray

            files = ray.get(files)
        self.folder = materialize(files, node_folder(s.sha256[:16]))
        paths = {s.weights: str(self.folder / "model" / Path(s.weights).name)}
        for i, name in enumerate(s.data):
            paths[name] = str(self.folder / "data" / f"{i}-{Path(name).name}")
        return paths


def materialize(files: dict[str, Any], folder: Path) -> Path:
    """Write the shipped files under `folder` once: a complete folder is reused; two workers writing
    at once each write their own copy and the first rename wins."""
    if (folder / COMPLETE).is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{folder.name}.partial-", dir=folder.parent))
    try:
        (stage / "model").mkdir()
        (stage / "data").mkdir()
        for name, content in files["model"].items():
            (stage / "model" / name).write_bytes(content)
        for i, (name, content) in enumerate(files["data"].items()):
            (stage / "data" / f"{i}-{Path(name).name}").write_bytes(content)
        (stage / COMPLETE).write_text("")
        try:
            os.rename(stage, folder)
        except OSError:  # another worker on this node was first
            if not (folder / COMPLETE).is_file():
                raise
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return folder


def _relocate(recipe, paths: dict[str, str]):
    """The recipe with the driver's file paths (teacher, data) replaced by this node's."""
    if not paths:
        return recipe
    passes = []
    for cfg in recipe.passes:
        changes = {}
        for name in ("teacher", "data"):
            value = getattr(cfg, name, None)
            if isinstance(value, str) and value in paths:
                changes[name] = paths[value]
        calibration = getattr(cfg, "calibration", None)
        if calibration is not None and calibration.data in paths:
            changes["calibration"] = calibration.replace(data=paths[calibration.data])
        passes.append(cfg.replace(**changes) if changes else cfg)
    calibration = recipe.calibration
    if calibration is not None and calibration.data in paths:
        calibration = calibration.replace(data=paths[calibration.data])
    e = recipe.evaluation
    evaluation = e.replace(data=paths[e.data]) if e.data in paths else e
    return recipe.replace(passes=passes, calibration=calibration, evaluation=evaluation)
