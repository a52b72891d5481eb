"""search(): the smallest or fastest model that keeps its accuracy, found by Optuna, trials run on Ray.

Everything is checked before anything is written (the space, the floor, the budget, the output folder,
the Ray address); then Ray starts (or is reached), the study is created (or loaded to resume), the
seed recipes are enqueued, the workers load the model, and trials are asked, run and told until the
budget is spent. The results (Pareto front table, JSON, plot) are written even when the search is
interrupted, and `--resume` continues it.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from compress.recipe import Evaluation
from compress.search.setup import Plan, prepare
from compress.search.space import SearchSpace


def search(
    model: Any,
    output: str | Path,
    *,
    min_retention: float = 0.99,
    objective: str = "both",
    space: str | Path | SearchSpace | None = None,
    trials: int | None = None,
    time_budget: str | float | None = None,
    workers: int | None = None,
    address: str | None = None,
    resume: bool = False,
    seed: int = 0,
    evaluation: Evaluation | dict | None = None,
    history: Any = "default",
    progress: Any = True,
    on_trial: Callable[[dict], None] | None = None,
):
    """Search the space for the models that keep `min_retention` of the accuracy and are smallest
    ("size"), fastest ("latency") or both, with Optuna's multi-objective TPE; trials run on Ray.

    `model`: a checkpoint (file or folder). `output`: the search's folder (settings, Optuna study,
    each trial's report and recipe, the Pareto front as Markdown, JSON and a plot). `space`: a search
    space file (default: recipes/search/default.yaml). `trials` or `time_budget` ('30m'): when to stop
    (default 20 trials). `workers`: how many trials at once (default: as this machine, or the cluster
    at `address`, allows). `resume`: continue the search in `output`. `evaluation`: how each trial is
    measured (a recipe's `evaluate:` section as an Evaluation or dict; default: CPU, timed on the
    runtime compress recommends for this CPU, as `--target auto` chooses it). Every
    trial is a run of the one runner, appended to `history` ("default", a History, or None).

    Returns a SearchResult: `.table()`, `.front()`, `.plot()`, `.best(...)` and `.save(trial, dir)`.

    Example:
        >>> import compress as cz
        >>> result = cz.search("model.safetensors", "out/search", trials=30)   # doctest: +SKIP
        >>> result.best(min_retention=0.99, prefer="size")                   # doctest: +SKIP
    """
    plan = prepare(
        model, output, min_retention, objective, space, trials, time_budget, workers, address, resume, seed,
        evaluation, history,
    )  # fmt: skip
    return execute(plan, progress, on_trial)


def execute(plan: Plan, progress: Any = True, on_trial: Callable[[dict], None] | None = None):
    """Run a checked search; the results are written however it ends."""
    from compress.progress import resolve
    from compress.search import cluster, record
    from compress.search.result import SearchResult
    from compress.search.study import enqueue, open_study, recover, write_settings

    progress = resolve(progress)
    started = time.monotonic()
    try:
        with cluster.session(plan.address) as ray_session:
            plan.folder.mkdir(parents=True, exist_ok=True)
            if not plan.resume:
                write_settings(plan.folder, plan.settings)
            study = open_study(plan.folder, plan.objective, plan.seed, create=not plan.resume)
            if plan.resume:
                for number in recover(study):
                    record.log(plan.folder, "interrupted", trial=number)
            else:
                for name, point in plan.seeds:
                    enqueue(study, point, {"name": name, "seed": name})
            record.log(plan.folder, "session", ray=ray_session.address, budget=plan.budget.describe())
            _run(plan, study, ray_session, progress, on_trial)
    finally:
        if plan.folder.exists() and (plan.folder / "settings.json").is_file():
            record.log(plan.folder, "session end", seconds=round(time.monotonic() - started, 3))
            SearchResult.load(plan.folder).write()
    result = SearchResult.load(plan.folder)
    result.notes = list(plan.notes) + result.notes
    return result


def _run(plan: Plan, study: Any, ray_session: Any, progress: Any, on_trial: Any) -> None:
    from compress.search import cluster
    from compress.search.loop import Loop
    from compress.search.points import Context
    from compress.search.worker import Setup, node_folder, node_id, payload

    threads = plan.evaluation.latency.threads or 1
    count, cpus, memory = cluster.plan_workers(ray_session, plan.source.stat().st_size, plan.workers, threads)
    data = tuple(_data_files(plan))
    ray = cluster.ray_module()
    shipped = None if ray_session.started else ray.put(payload(plan.source, data))  # one node: no copy

    scratch = f"search-{os.getpid()}-{uuid.uuid4().hex[:8]}"

    def setup_for(threads: int) -> Setup:
        return Setup(
            str(plan.source), plan.model_sha256, data, node_id(), threads, plan.evaluation.to_dict(), scratch
        )

    pool = cluster.Pool(setup_for, shipped, count, cpus, memory)
    try:
        sensitive = _sensitivity(plan, pool) if plan.space.needs_sensitivity else ()
        from compress.gate import Rule

        ctx = Context(
            teacher=str(plan.source),
            evaluation=plan.evaluation,
            gate=(Rule(metric="accuracy.retention", min=plan.floor),),
            sensitive=sensitive,
            export=plan.export,
        )
        Loop(plan, study, pool, ctx, progress, on_trial).run()
    except BaseException:
        pool.close(graceful=False)  # interrupted: do not wait for the trials still running
        raise
    else:
        pool.close()
    finally:  # on this node, what the workers did not remove (a killed or interrupted trial's model)
        shutil.rmtree(node_folder(scratch), ignore_errors=True)


def _sensitivity(plan: Plan, pool: Any) -> tuple[str, ...]:
    """The Linear layers ranked by sensitivity: from the cache, else measured once on a worker."""
    from compress.plan import default_cache_dir
    from compress.search import sensitivity

    measure = plan.space.steps["quantize"].mixed_precision.measure
    cached = sensitivity.cache_file(default_cache_dir(), plan.model_sha256, measure)
    rows = sensitivity.read_cached(cached)
    if rows is None:
        rows = pool.ray.get(pool.actors[0].sensitivity.remote(measure.to_dict()))
        sensitivity.write(cached, rows, plan.model_sha256, measure)
    sensitivity.write(plan.folder / "sensitivity.json", rows, plan.model_sha256, measure)
    return sensitivity.ranked(rows)


def _data_files(plan: Plan) -> list[str]:
    """Local data files the trials read (evaluation data, calibration or training text): shipped."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "data" and isinstance(value, str) and Path(value).is_file() and value not in found:
                    found.append(value)
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(plan.space.to_dict())
    walk(plan.evaluation.to_dict())
    return found
