"""The search loop: ask Optuna for a point, run its recipe on an idle worker, tell Optuna the values.

As many trials run at once as there are workers. A trial whose settings the passes refuse fails at
once, without a worker; one that fails on its worker is reported and skipped; one whose worker dies
(killed, out of memory) is tried again on the restarted worker, then reported as failed. None of
them stops the search. A point whose recipe an earlier trial already ran (or is running) is not run
again nor counted against the budget: Optuna is told the earlier trial's values, so the sampler moves
on. Each event is a line in the output folder's trials.jsonl.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from compress.errors import BadInput, CompressError
from compress.search import record
from compress.search.points import Context, recipe_key, recipe_of

if TYPE_CHECKING:
    from compress.search.setup import Plan

MAX_ATTEMPTS = 2  # a trial whose worker died runs once more
MAX_REPEATS = 50  # points in a row that repeat a measured recipe: the space holds nothing new
WAIT_S = 2.0


@dataclass
class Job:
    trial: Any  # optuna.Trial
    recipe: Any  # compress.recipe.Recipe
    actor: Any
    ref: Any = None
    attempt: int = 1
    started: float = field(default_factory=time.monotonic)


class Loop:
    def __init__(self, plan: Plan, study: Any, pool: Any, ctx: Context, progress: Any, on_trial: Any):
        from compress.search.study import OBJECTIVES

        self.plan, self.study, self.pool, self.ctx = plan, study, pool, ctx
        self.progress, self.on_trial = progress, on_trial
        self.ray = pool.ray
        self.keeper = record.Keeper(
            plan.folder,
            study,
            OBJECTIVES[plan.objective],
            plan.latency,
            plan.floor,
            plan.history,
            plan.model_sha256,
        )
        self.done = 0
        self.repeats = 0  # in a row
        self.exhausted = False

    def run(self) -> None:
        from compress.search.study import finished

        self.done = finished(self.study)
        started = time.monotonic()
        budget = self.plan.budget
        if self.progress:
            self.progress.start(f"search ({budget.describe()})", total=budget.trials)
            self.progress.advance(self.done)
        idle = list(self.pool.actors)
        running: dict[Any, Job] = {}
        try:
            while True:
                while (
                    idle
                    and not self.exhausted
                    and budget.open(self.done, len(running), time.monotonic() - started)
                ):
                    job = self._dispatch(idle[-1])
                    if job is not None:
                        running[job.ref] = job
                        idle.pop()
                if not running:
                    break
                ready, _ = self.ray.wait(list(running), num_returns=1, timeout=WAIT_S)
                for ref in ready:
                    job = running.pop(ref)
                    again = self._collect(job)
                    if again is not None:
                        running[again.ref] = again
                    elif job.actor in self.pool.actors:
                        idle.append(job.actor)
                if not self.pool.actors:
                    raise CompressError(
                        "every search worker died and none could be restarted; see trials.jsonl."
                    )
        finally:
            if self.progress:
                self.progress.done()

    def _dispatch(self, actor: Any) -> Job | None:
        """Ask for a trial and start it on `actor`; None when it failed before reaching a worker."""
        trial = self.study.ask()
        name = trial.user_attrs.get("name") or f"t{trial.number}"
        try:
            recipe = recipe_of(self.plan.space, trial, self.ctx, name)
        except BadInput as exc:
            self._failed(Job(trial, None, actor), f"bad setting: {exc}")
            return None
        key = recipe_key(recipe)
        trial.set_user_attr("recipe_key", key)
        earlier = self._same_recipe(key, trial.number)
        if earlier is not None:
            self._repeat(trial, recipe, earlier)
            return None
        self.repeats = 0
        job = Job(trial, recipe, actor)
        self._submit(job)
        return job

    def _same_recipe(self, key: str, number: int) -> Any:
        """The earlier trial (complete first, else running or failed) whose recipe has this key."""
        from optuna.trial import TrialState

        found = None
        for t in self.study.get_trials(deepcopy=False):
            attrs = t.user_attrs
            if t.number == number or attrs.get("recipe_key") != key:
                continue
            if attrs.get("interrupted") or "duplicate_of" in attrs:
                continue
            if t.state == TrialState.COMPLETE:
                return t
            if t.state in (TrialState.RUNNING, TrialState.FAIL) and found is None:
                found = t
        return found

    def _repeat(self, trial: Any, recipe: Any, earlier: Any) -> None:
        self.keeper.repeat(trial, recipe.name, earlier)
        self.repeats += 1
        line = {
            "trial": trial.number,
            "name": recipe.name,
            "of": earlier.number,
            "of_name": earlier.user_attrs.get("name", ""),
        }
        record.log(self.plan.folder, "duplicate", **line)
        if self.on_trial is not None:
            self.on_trial({"event": "duplicate", **line})
        if self.repeats >= MAX_REPEATS:
            self.exhausted = True
            record.log(
                self.plan.folder,
                "exhausted",
                reason=f"the sampler proposed {MAX_REPEATS} measured recipes in a row",
            )

    def _submit(self, job: Job) -> None:
        job.ref = job.actor.run.remote(job.recipe.to_yaml())
        info = self.pool.info.get(id(job.actor), {})
        record.log(
            self.plan.folder,
            "start",
            trial=job.trial.number,
            name=job.recipe.name,
            attempt=job.attempt,
            pid=info.get("pid"),
            node=info.get("node"),
        )

    def _collect(self, job: Job) -> Job | None:
        """Keep a finished trial; a Job to wait for again when its worker died and it runs once more."""
        from compress.search.cluster import dead_worker, reason

        try:
            outcome = self.ray.get(job.ref)
        except Exception as exc:
            why = reason(exc)
            if not dead_worker(self.ray, exc):
                self._failed(job, f"error on the worker: {why}")
                return None
            record.log(
                self.plan.folder, "worker died", trial=job.trial.number, attempt=job.attempt, reason=why
            )
            if not self._restarted(job.actor):
                self._failed(job, f"its worker died ({why}) and could not be restarted")
                return None
            if job.attempt >= MAX_ATTEMPTS:
                self._failed(job, f"its worker died {job.attempt} times ({why})")
                return None
            job.attempt += 1
            self._submit(job)
            return job
        if "error" in outcome:
            kind = "bad setting" if outcome.get("bad_setting") else "error"
            self._failed(job, f"{kind}: {outcome['error']}")
            return None
        self._complete(job, outcome)
        return None

    def _restarted(self, actor: Any) -> bool:
        try:
            self.pool.describe(actor)
        except CompressError:
            self.pool.actors.remove(actor)
            return False
        return True

    def _complete(self, job: Job, outcome: dict[str, Any]) -> None:
        from compress.report import Report

        report = Report.from_dict(outcome["report"], f"trial {job.trial.number}")
        try:
            values = self.keeper.complete(job.trial, job.recipe, report, self._attrs(job, outcome))
        except BadInput as exc:
            self._failed(job, f"not measured: {exc}")
            return
        self._finished(job, "done", values=[round(v, 6) for v in values])

    def _failed(self, job: Job, error: str) -> None:
        self.keeper.failed(job.trial, job.recipe, error, self._attrs(job, {}))
        self._finished(job, "failed", error=error)

    def _attrs(self, job: Job, outcome: dict[str, Any]) -> dict[str, Any]:
        attrs = {
            "name": job.recipe.name if job.recipe else job.trial.user_attrs.get("name", ""),
            "attempts": job.attempt,
        }
        if "seconds" in outcome:
            attrs["seconds"] = round(float(outcome["seconds"]), 3)
        return attrs

    def _finished(self, job: Job, event: str, **fields: Any) -> None:
        self.done += 1
        seconds = round(time.monotonic() - job.started, 3)
        name = job.recipe.name if job.recipe else ""
        line = {"trial": job.trial.number, "name": name, "attempt": job.attempt, "seconds": seconds, **fields}
        record.log(self.plan.folder, event, **line)
        if self.progress:
            self.progress.advance()
        if self.on_trial is not None:
            self.on_trial({"event": event, **line})
