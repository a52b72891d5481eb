"""sweep(): several settings on one model, each compressed and evaluated the same way, side by side.

The base model is loaded once; every setting goes through `pipeline.apply` and `eval.evaluate`,
the functions behind `compress quantize` / `compress eval`, so a point of the sweep is what the CLI
would have produced. The result is a table (HTML in a notebook, a pandas DataFrame on request), the
Pareto chart of compress.compare, and `best()`, which picks a setting under constraints.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compress.compare import Comparison, compare, describe_recipe
from compress.config import PassConfig
from compress.errors import BadInput
from compress.recipe import Evaluation, Recipe

if TYPE_CHECKING:
    from compress.artifact import Artifact
    from compress.gate import Rule
    from compress.report import Report

PREFER = ("size", "retention", "speed")


@dataclass
class Candidate:
    """One setting of a sweep: its recipe, the compressed model (in memory) and its report."""

    name: str
    recipe: Recipe  # the passes, with the sweep's evaluation settings
    artifact: Artifact
    report: Report

    def save(self, out_dir: str | Path) -> Path:
        """Write the model, its `report.json` and `recipe.yaml` into `out_dir`, atomically."""
        return self.artifact.save(
            out_dir, extra={"report.json": self.report.to_json() + "\n", "recipe.yaml": self.recipe.to_yaml()}
        )

    def to_recipe(self, gate: Sequence[Rule | dict] = (), name: str | None = None) -> Recipe:
        """This setting as a recipe for `compress run`, with gate rules (dicts or Rules) for CI.

        Example:
            >>> rules = [{"metric": "size.ratio", "max": 0.3}]
            >>> recipe = sweep.best(min_retention=0.99).to_recipe(rules)   # doctest: +SKIP
            >>> Path("recipe.yaml").write_text(recipe.to_yaml())           # doctest: +SKIP
        """
        from compress.gate import Rule

        rules = [r if isinstance(r, Rule) else Rule.parse(r, f"gate[{i}]") for i, r in enumerate(gate)]
        return Recipe(
            passes=list(self.recipe.passes),
            evaluation=self.recipe.evaluation,
            calibration=self.recipe.calibration,
            gate=rules,
            name=name if name is not None else self.recipe.name,
            description=f"chosen from a sweep: {self.name}",
        )

    def _repr_html_(self) -> str:
        return f"<div><b>{html.escape(self.name)}</b>{self.report._repr_html_()}</div>"


class Sweep:
    """The candidates of a sweep in the order given; a table, a Pareto chart and a chooser."""

    def __init__(self, candidates: list[Candidate]):
        self.candidates = candidates

    def __len__(self) -> int:
        return len(self.candidates)

    def __iter__(self):
        return iter(self.candidates)

    def __getitem__(self, key: int | str) -> Candidate:
        if isinstance(key, str):
            for c in self.candidates:
                if c.name == key:
                    return c
            raise KeyError(f"no setting named {key!r}; the sweep has: {', '.join(self.names)}")
        return self.candidates[key]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.candidates]

    def comparison(self) -> Comparison:
        """The reports side by side (compress.compare): Markdown, the Pareto points, the plot."""
        return compare([c.report for c in self.candidates], names=self.names)

    # ---- the table ---------------------------------------------------------------------------------
    def table(self) -> list[dict[str, Any]]:
        """One row per setting: size, retention, speedup, and whether it is on a Pareto front."""
        comparison = self.comparison()
        size_front = {p["name"] for p in comparison.points("size") if p["front"]}
        speed_front = {p["name"] for p in comparison.points("latency") if p["front"]}
        rows = []
        for c in self.candidates:
            r = c.report
            acc = r.accuracy
            rows.append(
                {
                    "setting": c.name,
                    "size_mb": _megabytes(r.size.get("bytes")),
                    "size_ratio": r.size.get("ratio"),
                    "bits_per_weight": r.size.get("bits_per_weight"),
                    "metric": f"{acc.task}: {acc.metric}" if acc.status == "ok" else None,
                    "value": acc.value,
                    "retention": acc.retention,
                    "speedup": _speedup(r, comparison),
                    "front_size": c.name in size_front,
                    "front_speed": c.name in speed_front,
                }
            )
        return rows

    def to_pandas(self):
        """The table as a pandas DataFrame indexed by setting (pandas is not a dependency of compress)."""
        try:
            import pandas as pd
        except ImportError:
            raise BadInput(
                "Sweep.to_pandas needs pandas, which is not installed (pip install pandas); "
                "Sweep.table() gives the same rows as a list of dicts."
            ) from None
        return pd.DataFrame(self.table()).set_index("setting")

    def to_markdown(self) -> str:
        return self.comparison().to_markdown()

    def _repr_html_(self) -> str:
        rows = self.table()
        base = self.candidates[0].report
        timed = any(row["speedup"] is not None for row in rows)
        head = ["setting", "size", "size ratio", "bits/weight", "retention", "speedup", "Pareto front"]
        lines = [
            "<tr><td><i>baseline</i></td>"
            f"<td>{_fmt(_megabytes(base.size.get('baseline_bytes')), 1)} MB</td><td>1.000</td>"
            f"<td>{_fmt(base.size.get('baseline_bits_per_weight'), 2)}</td><td>1.0000</td>"
            f"<td>{'1.00' if timed else ''}</td><td></td></tr>"
        ]
        for row in rows:
            fronts = [axis for axis, key in (("size", "front_size"), ("speed", "front_speed")) if row[key]]
            cells = [
                html.escape(row["setting"]),
                f"{_fmt(row['size_mb'], 1)} MB",
                _fmt(row["size_ratio"], 3),
                _fmt(row["bits_per_weight"], 2),
                _fmt(row["retention"], 4),
                _fmt(row["speedup"], 2),
                " and ".join(fronts),
            ]
            lines.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        acc = base.accuracy
        metric = f"{acc.task}: {acc.metric}" if acc.status == "ok" else "accuracy unavailable"
        caption = html.escape(
            f"sweep of {len(rows)} settings on {base.baseline.get('name')}; retention of {metric}"
        )
        header = "".join(f"<th>{h}</th>" for h in head)
        return (
            f"<div><b>{caption}</b><table><thead><tr>{header}</tr></thead>"
            f"<tbody>{''.join(lines)}</tbody></table></div>"
        )

    # ---- the chart ---------------------------------------------------------------------------------
    def plot(self, path: str | Path | None = None) -> Chart:
        """The Pareto chart (retention against size, and against speed when latency was measured).

        Shown inline in a notebook; `path` (.png, .svg, .pdf) also writes it to a file.
        """
        chart = Chart(self.comparison().figure())
        if path is not None:
            chart.save(path)
        return chart

    # ---- choosing ----------------------------------------------------------------------------------
    def best(
        self,
        *,
        min_retention: float | None = None,
        max_size_ratio: float | None = None,
        min_speedup: float | None = None,
        max_bits_per_weight: float | None = None,
        prefer: str = "size",
    ) -> Candidate:
        """The setting that meets every constraint given and is best by `prefer`:
        "size" (smallest, then highest retention), "retention" (highest, then smallest) or "speed"
        (highest speedup, then highest retention). BadInput when none meets the constraints.

        Example:
            >>> sweep.best(min_retention=0.99, max_size_ratio=0.3).save("out/chosen")   # doctest: +SKIP
        """
        if prefer not in PREFER:
            raise BadInput(f"best: prefer must be one of {', '.join(PREFER)}, got '{prefer}'.")
        bounds = [
            ("retention", min_retention, True),
            ("size_ratio", max_size_ratio, False),
            ("speedup", min_speedup, True),
            ("bits_per_weight", max_bits_per_weight, False),
        ]
        bounds = [b for b in bounds if b[1] is not None]
        fits: list[tuple[Candidate, dict]] = []
        misses: list[str] = []
        for candidate, row in zip(self.candidates, self.table(), strict=True):
            missed = [m for key, bound, lower in bounds if (m := _miss(row, key, bound, lower))]
            if missed:
                misses.append(f"{candidate.name}: {', '.join(missed)}")
            else:
                fits.append((candidate, row))
        if not fits:
            asked = ", ".join(f"{_CONSTRAINT[key]}={bound}" for key, bound, _ in bounds)
            raise BadInput(f"best: no setting of the sweep meets {asked} ({'; '.join(misses)}).")

        def key(item: tuple[Candidate, dict]) -> tuple:
            row = item[1]
            size, ret, speed = (_or(row["size_ratio"], 1e9), _or(row["retention"], -1e9), row["speedup"])
            if prefer == "size":
                return (size, -ret)
            if prefer == "retention":
                return (-ret, size)
            return (-_or(speed, -1e9), -ret)

        return min(fits, key=key)[0]

    def __repr__(self) -> str:
        return f"Sweep({len(self)} settings: {', '.join(self.names)})"


_CONSTRAINT = {
    "retention": "min_retention",
    "size_ratio": "max_size_ratio",
    "speedup": "min_speedup",
    "bits_per_weight": "max_bits_per_weight",
}


def _miss(row: dict, key: str, bound: float, lower: bool) -> str | None:
    """Why a row misses a bound (None when it meets it); a value not measured misses it."""
    value = row[key]
    label = key.replace("_", " ")
    if value is None:
        return f"{label} not measured"
    if (value < bound) if lower else (value > bound):
        return f"{label} {value:.4g} {'<' if lower else '>'} {bound}"
    return None


class Chart:
    """A matplotlib Figure that shows itself inline in Jupyter (as PNG) and saves to a file."""

    def __init__(self, figure):
        self.figure = figure

    def save(self, path: str | Path) -> Path:
        """Write the chart as PNG, SVG or PDF (by the file's suffix), atomically."""
        from compress.plots import save_figure

        return save_figure(self.figure, Path(path))

    def _repr_png_(self) -> bytes:
        import io

        buffer = io.BytesIO()
        self.figure.savefig(buffer, format="png", dpi=100)
        return buffer.getvalue()


def sweep(
    model: Any,
    settings: Sequence[Any],
    *,
    names: Sequence[str] | None = None,
    task: str = "auto",
    data: str | None = None,
    limit: int | None = None,
    runtimes: Sequence[str] = ("torch",),
    devices: Sequence[str] = ("cpu",),
    latency: Any = None,
    inputs: Any = None,
    task_options: Any = None,
    history: Any = "default",
    progress: Any = True,
) -> Sweep:
    """Compress `model` with each setting, evaluate each against it the same way, and return a Sweep.

    `settings`: each one pass's settings (cz.Quantize(...), cz.Prune(...)), a list of them (passes
    in order), a Recipe, or a recipe YAML file (its passes, calibration and export steps are used; the
    evaluation is the sweep's, so every point is measured alike). The evaluation keywords are those
    of `evaluate`; latency is timed on the CPU with torch unless `devices` / `runtimes` say otherwise
    (`latency=cz.LatencySettings(budget_s=5)` for a quick look). Every point is a run of the one
    runner (compress.runner.run) on the model loaded once; the baseline's accuracy work (embeddings of
    the probe texts) is done once, equal calibration settings are drawn once, and each point's report
    goes into the history (`history=None` keeps none), as `compress sweep` does.
    `progress`: True prints plain text progress (fine in a notebook), False none, or a Progress.

    Returns a Sweep: an HTML table in a notebook, `.table()`, `.to_pandas()`, `.plot()`, and
    `.best(...)`, a Candidate (`.artifact`, `.report`, `.save(dir)`, `.to_recipe(gate=...)`).

    Example:
        >>> import compress as cz
        >>> s = cz.sweep("model.safetensors",
        ...              [cz.Quantize(scheme="int8")] +
        ...              [cz.Quantize(scheme="int4", group_size=g) for g in (32, 64, 128)],
        ...              task="classification", data="spam", limit=200)        # doctest: +SKIP
        >>> s                                   # an HTML table in a notebook  # doctest: +SKIP
        >>> s.plot("pareto.png")                # the Pareto chart             # doctest: +SKIP
        >>> s.best(min_retention=0.99).save("out/chosen")                     # doctest: +SKIP
    """
    from compress.eval.tasks import pick_task
    from compress.model import load
    from compress.progress import resolve
    from compress.runner import run

    evaluation = _evaluation(task, data, limit, runtimes, devices, latency, task_options)
    recipes = [_as_recipe(s, i) for i, s in enumerate(settings)]
    if not recipes:
        raise BadInput("sweep: no settings given; pass a list such as [cz.Quantize(scheme='int8')].")
    labels = _labels(recipes, names)
    progress = resolve(progress)
    base = load(model, progress=progress)
    # One task for every point: it embeds or scores the baseline once, not once per setting.
    chosen_task, why = pick_task(
        base, task, data, inputs=inputs, limit=limit, options=evaluation.task_options
    )
    draws: dict = {}  # equal calibration settings are drawn once for all the points
    candidates = []
    for i, (label, recipe) in enumerate(zip(labels, recipes, strict=True)):
        point = recipe.replace(evaluation=evaluation, name=recipe.name or _slug(label))
        step = _Prefixed(progress, f"[{i + 1}/{len(recipes)} {label}]") if progress else None
        result = run(
            point,
            base,
            task=chosen_task,
            inputs=inputs,
            history=history,
            progress=step,
            draws=draws,
            command="sweep",
        )
        report = result.report
        report.candidate["name"] = label
        if chosen_task is not None:  # the note says why the task was picked, as `compress eval` does
            given = f"task '{chosen_task.name}' as given"
            report.notes = [why if note == given else note for note in report.notes]
        candidates.append(Candidate(label, result.plan.recipe, result.artifact, report))
    return Sweep(candidates)


def _evaluation(task, data, limit, runtimes, devices, latency, task_options) -> Evaluation:
    """The evaluation every point of a sweep gets (the keywords of `evaluate`)."""
    from compress.eval.latency import LatencySettings
    from compress.eval.tasks import TaskOptions

    options = task_options if isinstance(task_options, TaskOptions) else TaskOptions.from_dict(task_options)
    return Evaluation(
        task=task,
        data=data,
        limit=limit,
        runtimes=tuple(runtimes),
        devices=tuple(devices),
        latency=latency or LatencySettings(),
        task_options=options,
    )


class _Prefixed:
    """Progress of one setting of a sweep: each line says which setting it is about."""

    def __init__(self, progress: Any, prefix: str):
        self._progress, self._prefix = progress, prefix

    def start(self, description: str, total: int | None = None) -> None:
        self._progress.start(f"{self._prefix} {description}", total)

    def advance(self, steps: int = 1) -> None:
        self._progress.advance(steps)

    def done(self) -> None:
        self._progress.done()


def _as_recipe(setting: Any, index: int) -> Recipe:
    """A Recipe from one setting of a sweep, its passes validated now, before anything runs."""
    where = f"sweep settings[{index}]"
    if isinstance(setting, str | Path):
        recipe = Recipe.load(setting)
    elif isinstance(setting, Recipe | PassConfig | list | tuple):
        recipe = Recipe.of(setting)
    else:
        raise BadInput(
            f"{where}: expected pass settings (cz.Quantize(...)), a list of them, a Recipe or a recipe "
            f"file, got {type(setting).__name__}."
        )
    if not recipe.passes:
        raise BadInput(f"{where}: has no passes.")
    recipe.check_order()
    return recipe


def _labels(recipes: list[Recipe], names: Sequence[str] | None) -> list[str]:
    if names is not None:
        labels = [str(n) for n in names]
        if len(labels) != len(recipes):
            raise BadInput(f"sweep: {len(labels)} names for {len(recipes)} settings.")
        if len(set(labels)) != len(labels):
            raise BadInput("sweep: the names must differ from each other.")
        return labels
    labels = [r.name or describe_recipe(r.to_list()) for r in recipes]
    counts: dict[str, int] = {}
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        if counts[label] > 1:
            seen[label] = seen.get(label, 0) + 1
            label = f"{label} ({seen[label]})"
        out.append(label)
    return out


def _speedup(report: Report, comparison: Comparison) -> float | None:
    if comparison.latency_key is None:
        return None
    row = report.latency_row(*comparison.latency_key)
    return row["speedup"] if row else None


def _slug(name: str) -> str:
    return "-".join("".join(ch if ch.isalnum() else " " for ch in name.lower()).split()) or "recipe"


def _megabytes(n: int | None) -> float | None:
    return None if n is None else n / 1e6


def _fmt(x: float | None, digits: int) -> str:
    return "" if x is None else f"{x:.{digits}f}"


def _or(x: float | None, default: float) -> float:
    return default if x is None else x
