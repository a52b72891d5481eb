"""What a search keeps of each trial: its report and recipe in the output folder, a line in the event
log, a row in the history database, and its values (or failure) in the Optuna study."""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compress.errors import BadInput

EVENTS = "trials.jsonl"
TRIALS = "trials"


def log(folder: Path, event: str, **fields: Any) -> None:
    """Append one line to the event log (start, retry, done, failed, ...): one write per line."""
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")
    line = json.dumps({"time": now, "event": event, **fields}, default=str) + "\n"
    with open(folder / EVENTS, "a", encoding="utf-8") as f:
        f.write(line)


def events(folder: Path) -> list[dict[str, Any]]:
    path = folder / EVENTS
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def trial_folder(folder: Path, number: int) -> Path:
    return folder / TRIALS / f"{number:04d}"


def objective_values(report: Any, objective: tuple[str, ...], latency: tuple[str, str]) -> list[float]:
    """The trial's values in the study's order (retention, size ratio, speedup); BadInput saying which
    one the report lacks (a trial without them cannot be placed on a Pareto front)."""
    acc = report.accuracy
    if acc.status != "ok" or acc.retention is None:
        raise BadInput(f"its accuracy was not measured ({acc.reason or acc.status}).")
    values = {"retention": float(acc.retention)}
    ratio = report.size.get("ratio")
    if "size" in objective:
        if ratio is None:
            raise BadInput("its size ratio was not measured.")
        values["size"] = float(ratio)
    if "speedup" in objective:
        row = report.latency_row(*latency)
        if row is None:
            why = report.unavailable_reason(f"latency.{latency[0]}.{latency[1]}.speedup") or "not measured"
            raise BadInput(f"its {latency[0]}/{latency[1]} latency is unavailable ({why}).")
        values["speedup"] = float(row["speedup"])
    return [values[key] for key in objective]


@dataclass
class Keeper:
    """Records finished trials: the files, the history row, the study's tell."""

    folder: Path
    study: Any
    objective: tuple[str, ...]
    latency: tuple[str, str]
    floor: float
    history: Any | None
    model_sha256: str

    def complete(self, trial: Any, recipe: Any, report: Any, attrs: dict[str, Any]) -> list[float]:
        """Keep an Optuna trial that ran; BadInput (from objective_values) when it lacks a value."""
        from compress.checkpoint import atomic_output_dir
        from compress.gate import gate

        report.candidate["name"] = recipe.name
        values = objective_values(report, self.objective, self.latency)
        verdict = gate(report, recipe.gate) if recipe.gate else None
        with atomic_output_dir(trial_folder(self.folder, trial.number)) as stage:
            (stage / "report.json").write_text(report.to_json() + "\n")
            (stage / "recipe.yaml").write_text(recipe.to_yaml())
        if self.history is not None:
            self.history.append(report, command="search", model=self.model_sha256, verdict=verdict)
        _attrs(trial, attrs)
        trial.set_constraint("retention_floor", self.floor - values[0])  # <= 0: keeps the floor
        self.study.tell(trial, values)
        return values

    def repeat(self, trial: Any, name: str, earlier: Any) -> None:
        """A trial whose recipe `earlier` ran (or is running): told the earlier values (failed, when
        the earlier one failed or has none yet), marked `duplicate_of`; nothing is written for it."""
        from optuna.trial import TrialState

        _attrs(trial, {"name": name, "duplicate_of": earlier.number})
        if earlier.state == TrialState.COMPLETE:
            trial.set_constraint("retention_floor", self.floor - earlier.values[0])
            self.study.tell(trial, list(earlier.values))
        else:
            self.study.tell(trial, state=TrialState.FAIL)

    def failed(self, trial: Any, recipe: Any | None, error: str, attrs: dict[str, Any]) -> None:
        from optuna.trial import TrialState

        from compress.checkpoint import atomic_output_dir

        if recipe is not None:
            with atomic_output_dir(trial_folder(self.folder, trial.number)) as stage:
                (stage / "recipe.yaml").write_text(recipe.to_yaml())
                (stage / "error.txt").write_text(error + "\n")
        _attrs(trial, {**attrs, "error": error})
        self.study.tell(trial, state=TrialState.FAIL)


def _attrs(trial: Any, attrs: dict[str, Any]) -> None:
    for key, value in attrs.items():
        trial.set_user_attr(key, value)
