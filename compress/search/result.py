"""The outcome of a search, read back from its folder: every trial, the Pareto front, the choice.

The front is compress.compare's (retention against size, and against speedup on the search's
device and runtime, the baseline included), restricted to the trials that keep the retention floor.
`best()` chooses under constraints the way `Sweep.best` does, through the gate's rules
(compress.search.pick), and `save()` runs the chosen trial's recipe again, with gate rules for CI,
through the one runner into a folder of its own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compress.errors import BadInput
from compress.search import record
from compress.search.pick import choose, ci_rules, describe_passes


@dataclass
class Trial:
    number: int
    name: str
    state: str  # complete | failed | interrupted | duplicate | running | waiting
    params: dict[str, Any]
    attempts: int = 1
    seconds: float | None = None
    error: str | None = None
    seed: str | None = None
    duplicate_of: int | None = None  # the earlier trial that ran this recipe (this one did not run)
    recipe: Any = None  # compress.recipe.Recipe, as it ran
    report: Any = None  # compress.report.Report

    def __repr__(self) -> str:
        what = describe_passes(self.recipe) or "no recipe"
        if self.report is None:
            return f"Trial({self.number}, {self.name}: {what}, {self.state})"
        r = self.report
        return (
            f"Trial({self.number}, {self.name}: {what}; size ratio {r.size.get('ratio')}, "
            f"retention {r.accuracy.retention})"
        )

    def _repr_html_(self) -> str:
        import html

        passes = html.escape(describe_passes(self.recipe))
        head = f"<b>trial {self.number}: {html.escape(self.name)}</b> ({passes})"
        return f"<div>{head}{self.report._repr_html_() if self.report is not None else ''}</div>"


@dataclass
class SearchResult:
    folder: Path
    settings: dict[str, Any]
    trials: list[Trial]
    notes: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, folder: str | Path) -> SearchResult:
        """Read a search's folder (settings.json, the Optuna study, each trial's report and recipe)."""
        from compress.search.study import SETTINGS, open_study

        folder = Path(folder)
        try:
            settings = json.loads((folder / SETTINGS).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise BadInput(f"{folder}: is not a search folder ({SETTINGS}: {exc}).") from None
        study = open_study(folder, settings["objective"], settings.get("seed", 0), create=False)
        trials = [_trial(folder, t) for t in study.get_trials(deepcopy=False)]
        notes = [
            f"the search stopped before its budget: {e['reason']}; the space holds no new point it finds."
            for e in record.events(folder)
            if e["event"] == "exhausted"
        ]
        return cls(folder, settings, trials, notes)

    # ---- reading ---------------------------------------------------------------------------------
    @property
    def floor(self) -> float:
        return float(self.settings["min_retention"])

    @property
    def latency(self) -> tuple[str, str]:
        e = self.settings["evaluation"]
        return e["devices"][0], e["runtimes"][0]

    @property
    def complete(self) -> list[Trial]:
        return [t for t in self.trials if t.state == "complete" and t.report is not None]

    def comparison(self):
        from compress.compare import compare

        trials = self.complete
        if not trials:
            raise BadInput(f"{self.folder}: no trial of this search has finished yet.")
        latency = "/".join(self.latency)
        measured = all(t.report.latency_row(*self.latency) for t in trials)
        return compare(
            [t.report for t in trials], names=self._labels(trials), latency=latency if measured else None
        )

    def table(self) -> list[dict[str, Any]]:
        """One row per finished trial: passes, size ratio, retention, speedup, floor kept, fronts."""
        trials = self.complete
        if not trials:
            return []
        comparison = self.comparison()
        fronts = {
            axis: {p["name"] for p in comparison.points(axis) if p["front"]} for axis in ("size", "latency")
        }
        rows = []
        for trial, label in zip(trials, self._labels(trials), strict=True):
            report, row = trial.report, trial.report.latency_row(*self.latency)
            retention = report.accuracy.retention
            rows.append(
                {
                    "trial": trial.number,
                    "name": trial.name,
                    "passes": describe_passes(trial.recipe),
                    "size_ratio": report.size.get("ratio"),
                    "size_mb": (report.size.get("bytes") or 0) / 1e6,
                    "retention": retention,
                    "speedup": row["speedup"] if row else None,
                    "keeps_floor": retention is not None and retention >= self.floor,
                    "front_size": label in fronts["size"],
                    "front_speed": label in fronts["latency"],
                    "seconds": trial.seconds,
                    "attempts": trial.attempts,
                    "seed": trial.seed,
                }
            )
        return rows

    def front(self) -> list[dict[str, Any]]:
        """The rows on the Pareto front of the search's objective that keep the retention floor."""
        keys = {"size": ("front_size",), "latency": ("front_speed",), "both": ("front_size", "front_speed")}
        wanted = keys[self.settings["objective"]]
        return [r for r in self.table() if r["keeps_floor"] and any(r[k] for k in wanted)]

    def wall_seconds(self) -> float:
        return sum(e.get("seconds", 0.0) for e in record.events(self.folder) if e["event"] == "session end")

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for t in self.trials:
            out[t.state] = out.get(t.state, 0) + 1
        return out

    # ---- choosing --------------------------------------------------------------------------------
    def best(
        self,
        *,
        min_retention: float | None = None,
        max_size_ratio: float | None = None,
        min_speedup: float | None = None,
        prefer: str = "size",
    ) -> Trial:
        """The finished trial that passes the gate rules these constraints make (retention floor: the
        search's unless given) and is best by `prefer` (size, retention or speed); BadInput when none."""
        floor = self.floor if min_retention is None else min_retention
        return choose(self.complete, floor, max_size_ratio, min_speedup, prefer, self.latency)

    def ci_recipe(self, trial: Trial, *, min_speedup: float | None = None, name: str | None = None):
        """The trial's recipe with gate rules for CI (compress.search.pick.ci_rules)."""
        from compress.sweep import Candidate

        rules = ci_rules(trial.report, self.floor, self.latency, min_speedup)
        candidate = Candidate(trial.name, trial.recipe, None, trial.report)  # type: ignore[arg-type]
        recipe = candidate.to_recipe(rules, name=name or f"{Path(self.settings['model']).parent.name}-search")
        recipe.description = (
            f"chosen by compress search (trial {trial.number}, {trial.name}): {describe_passes(trial.recipe)}"
        )
        return recipe

    def save(
        self, trial: Trial, out: str | Path, *, recipe: Any = None, history: Any = None, progress: Any = None
    ):
        """Run the trial's CI recipe (or `recipe`) again on the model into `out`: the model, its
        recipe.yaml (with the gate) and report.json. Returns the RunResult (its verdict too)."""
        from compress.checkpoint import atomic_file
        from compress.runner import run

        recipe = recipe or self.ci_recipe(trial)
        result = run(
            recipe,
            self.settings["model"],
            out,
            cache=None,
            history=history,
            progress=progress,
            command="search",
        )
        with atomic_file(Path(out) / "report.json") as tmp:
            tmp.write_text(result.report.to_json() + "\n")
        return result

    # ---- showing ---------------------------------------------------------------------------------
    def plot(self, path: str | Path | None = None):
        """The Pareto chart with the retention floor (a Chart: inline in Jupyter; `path` saves it)."""
        from compress.sweep import Chart

        title = f"compress search on {Path(self.settings['model']).parent.name}: {len(self.complete)} trials"
        chart = Chart(self.comparison().figure(floor=self.floor, title=title))
        if path is not None:
            chart.save(path)
        return chart

    def to_dict(self) -> dict[str, Any]:
        from compress.search.present import as_dict

        return as_dict(self)

    def to_markdown(self) -> str:
        from compress.search.present import as_markdown

        return as_markdown(self)

    def write(self) -> None:
        """front.md, front.json and pareto.png in the search's folder."""
        from compress.checkpoint import atomic_file

        with atomic_file(self.folder / "front.md") as tmp:
            tmp.write_text(self.to_markdown())
        with atomic_file(self.folder / "front.json") as tmp:
            tmp.write_text(json.dumps(self.to_dict(), indent=2, default=str) + "\n")
        if self.complete:
            self.plot(self.folder / "pareto.png")

    def _repr_markdown_(self) -> str:
        return self.to_markdown()

    def _labels(self, trials: list[Trial]) -> list[str]:
        names = [t.name for t in trials]
        return [n if names.count(n) == 1 else f"{n} #{t.number}" for n, t in zip(names, trials, strict=True)]


def _trial(folder: Path, frozen: Any) -> Trial:
    from compress.recipe import Recipe
    from compress.report import Report

    attrs = frozen.user_attrs
    state = frozen.state.name.lower()
    state = {"fail": "failed", "interrupted": "interrupted"}.get(state, state)
    if state == "failed" and attrs.get("interrupted"):
        state = "interrupted"
    if "duplicate_of" in attrs:
        state = "duplicate"
    here = record.trial_folder(folder, frozen.number)
    recipe = Recipe.load(here / "recipe.yaml") if (here / "recipe.yaml").is_file() else None
    report = Report.load(here / "report.json") if (here / "report.json").is_file() else None
    return Trial(
        number=frozen.number,
        name=attrs.get("name") or f"t{frozen.number}",
        state=state,
        params=dict(frozen.params),
        attempts=int(attrs.get("attempts", 1)),
        seconds=attrs.get("seconds"),
        error=attrs.get("error"),
        seed=attrs.get("seed"),
        duplicate_of=attrs.get("duplicate_of"),
        recipe=recipe,
        report=report,
    )
