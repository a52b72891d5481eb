"""The search's state in its output folder: what it was started with, and the Optuna study.

`settings.json` records the model (its sha256), the space, the objective, the retention floor and the
evaluation; `--resume` refuses a folder whose search differs in any of them. `study.db` is Optuna's
SQLite storage: every trial asked, its values and state, so a search that was interrupted continues
where it stopped (the trials that were running are marked failed as interrupted and asked again with
the same values; finished ones are not redone). The sampler is Optuna's multi-objective TPE, seeded,
with the retention floor as each trial's constraint, and the seed recipes are enqueued first.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from compress._version import __version__
from compress.errors import BadInput

SETTINGS = "settings.json"
STUDY = "study.db"
NAME = "compress-search"
OBJECTIVES = {
    "size": ("retention", "size"),
    "latency": ("retention", "speedup"),
    "both": ("retention", "size", "speedup"),
}
DIRECTIONS = {"retention": "maximize", "size": "minimize", "speedup": "maximize"}
COMPARED = ("model_sha256", "space", "objective", "min_retention", "evaluation")  # must match to resume


def check_folder(folder: Path, resume: bool) -> dict[str, Any] | None:
    """The recorded settings of the search to resume (None for a new one); BadInput for a folder that
    holds something else. Reads only."""
    settings = folder / SETTINGS
    if resume:
        if not settings.is_file() or not (folder / STUDY).is_file():
            raise BadInput(
                f"{folder}: holds no search to resume (no {SETTINGS} and {STUDY}); leave out --resume."
            )
        try:
            return json.loads(settings.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise BadInput(
                f"{settings}: cannot be read ({exc}); the search there cannot be resumed."
            ) from None
    if settings.is_file():
        raise BadInput(
            f"{folder}: holds a search already; continue it with --resume, or choose another folder."
        )
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise BadInput(f"{folder}: exists and is not an empty folder; choose another output folder.")
    return None


def check_same(recorded: dict[str, Any], settings: dict[str, Any], folder: Path) -> None:
    for key in COMPARED:
        if recorded.get(key) != settings.get(key):
            raise BadInput(
                f"{folder}: the search there was started with a different {key.replace('_', ' ')}; resume it "
                "with the same model, space, objective, --min-retention and evaluation, or start a new one."
            )


def write_settings(folder: Path, settings: dict[str, Any]) -> None:
    from compress.checkpoint import atomic_file

    with atomic_file(folder / SETTINGS) as tmp:
        tmp.write_text(json.dumps({**settings, "compress": __version__}, indent=2) + "\n")


def open_study(folder: Path, objective: str, seed: int, create: bool):
    """The Optuna study in `folder` (created, or loaded to resume)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    storage = optuna.storages.RDBStorage(f"sqlite:///{folder.resolve() / STUDY}")
    # The retention floor is each trial's constraint (Trial.set_constraint, compress.search.record).
    sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True)
    if create:
        directions = [DIRECTIONS[v] for v in OBJECTIVES[objective]]
        return optuna.create_study(study_name=NAME, storage=storage, sampler=sampler, directions=directions)
    return optuna.load_study(study_name=NAME, storage=storage, sampler=sampler)


def enqueue(study, point: dict[str, Any], attrs: dict[str, Any]) -> None:
    study.enqueue_trial(point, user_attrs=attrs, skip_if_exists=True)


def recover(study) -> list[int]:
    """Trials left running by an interrupted search: marked failed (interrupted) and asked again."""
    from optuna.trial import TrialState

    again = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_user_attr(trial._trial_id, "interrupted", True)
        study.tell(trial.number, state=TrialState.FAIL)
        attrs = {k: v for k, v in trial.user_attrs.items() if k in ("name", "seed")}
        study.enqueue_trial(trial.params, user_attrs=attrs)
        again.append(trial.number)
    return again


def finished(study) -> int:
    """Trials that count against the budget: complete or failed, not the interrupted ones nor the
    repeats of a recipe already measured (compress.search.loop)."""
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL))
    return sum(not t.user_attrs.get("interrupted") and "duplicate_of" not in t.user_attrs for t in done)
