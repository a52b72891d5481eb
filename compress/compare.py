"""Several reports side by side, and where each candidate sits against the others (Pareto front).

A candidate is on the front when no other point (the baseline included) is at least as good on
both axes and better on one: for size, smaller ratio and higher retention; for latency, higher
speedup and higher retention.
"""

from __future__ import annotations

import html
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from compress.errors import BadInput
from compress.report import Report, _mb, _num, _ratio, _speed


def describe_recipe(recipe: list[dict]) -> str:
    """A short label for a recipe: 'quantize int4 g32 asym'."""
    parts = []
    for step in recipe:
        words = [str(step.get("kind", "?"))]
        if step.get("scheme"):
            words.append(str(step["scheme"]))
        if step.get("scheme") == "int4" and step.get("group_size"):
            words.append(f"g{step['group_size']}")
        if step.get("symmetric") is False:
            words.append("asym")
        if step.get("method") not in (None, "rtn", "auto"):  # the defaults go unsaid
            words.append(str(step["method"]))
        parts.append(" ".join(words))
    return " + ".join(parts) or "—"


def pareto_front(points: list[tuple[float, float]], lower_x_is_better: bool) -> list[int]:
    """Indices of the points no other point dominates (y: higher is better)."""

    def dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
        ax, bx = (a[0], b[0]) if lower_x_is_better else (-a[0], -b[0])
        return ax <= bx and a[1] >= b[1] and (ax < bx or a[1] > b[1])

    return [i for i, p in enumerate(points) if not any(dominates(q, p) for q in points if q is not p)]


@dataclass
class Comparison:
    reports: list[Report]
    names: list[str]
    latency_key: tuple[str, str] | None
    notes: list[str] = field(default_factory=list)

    # ---- the table -------------------------------------------------------------------------------
    def rows(self) -> list[list[str]]:
        """[label, baseline, candidate 1, ...] rows shared by Markdown, HTML and the rich table."""
        first = self.reports[0]
        acc = first.accuracy
        rows = [
            ["recipe", "—", *[describe_recipe(r.candidate.get("recipe") or []) for r in self.reports]],
            [
                "size",
                _mb(first.size.get("baseline_bytes")),
                *[_mb(r.size.get("bytes")) for r in self.reports],
            ],
            ["size ratio", "×1.000", *[_ratio(r.size.get("ratio")) for r in self.reports]],
            [
                "bits per weight",
                _num(first.size.get("baseline_bits_per_weight"), 2),
                *[_num(r.size.get("bits_per_weight"), 2) for r in self.reports],
            ],
        ]
        if acc.status == "ok":
            rows.append(
                [
                    f"{acc.task}: {acc.metric}",
                    _num(acc.baseline, 4),
                    *[
                        _num(r.accuracy.value, 4) if r.accuracy.status == "ok" else "unavailable"
                        for r in self.reports
                    ],
                ]
            )
        rows.append(["retention", "1.0000", *[_num(r.accuracy.retention, 4) for r in self.reports]])
        for device, runtime in self.latency_keys():
            p50, speed = [f"latency {device}/{runtime} p50"], [f"speedup {device}/{runtime}"]
            measured = [r.latency_row(device, runtime) for r in self.reports]
            base_p50 = [row["baseline_p50_ms"] for row in measured if row]
            p50.append(f"{_num(statistics.median(base_p50), 2)} ms (median)" if base_p50 else "")
            speed.append("×1.00")
            for report in self.reports:
                row = report.latency_row(device, runtime)
                p50.append(f"{_num(row['p50_ms'], 2)} ms" if row else "unavailable")
                speed.append(_speed(row["speedup"]) if row else "unavailable")
            rows += [p50, speed]
        return rows

    def latency_keys(self) -> list[tuple[str, str]]:
        keys: list[tuple[str, str]] = []
        for report in self.reports:
            for row in report.latency:
                key = (row["device"], row["runtime"])
                if row["status"] == "ok" and key not in keys:
                    keys.append(key)
        return keys

    def to_markdown(self) -> str:
        header = ["", "baseline", *self.names]
        lines = [
            f"### compress compare: {len(self.reports)} candidates of {self.reports[0].baseline.get('name')}",
            "",
            "| " + " | ".join(header) + " |",
            "|---|" + "---:|" * (len(header) - 1),
        ]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows()]
        if self.notes:
            lines += ["", *[f"- {n}" for n in self.notes]]
        return "\n".join(lines) + "\n"

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in ["", "baseline", *self.names])
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in self.rows()
        )
        notes = "".join(f"<li>{html.escape(n)}</li>" for n in self.notes)
        return f"<div><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>" + (
            f"<ul>{notes}</ul></div>" if notes else "</div>"
        )

    def to_dict(self) -> dict:
        return {
            "schema": "compress.compare/1",
            "candidates": self.names,
            "columns": ["", "baseline", *self.names],
            "rows": self.rows(),
            "points": {"size": self.points("size"), "latency": self.points("latency")},
            "notes": self.notes,
        }

    # ---- the plot --------------------------------------------------------------------------------
    def points(self, axis: str) -> list[dict]:
        """[{name, x, retention, front}] for 'size' (size ratio) or 'latency' (speedup); baseline first."""
        raw: list[tuple[str, float, float]] = [("baseline", 1.0, 1.0)]
        for name, report in zip(self.names, self.reports, strict=True):
            x = report.size.get("ratio") if axis == "size" else self._speedup(report)
            y = report.accuracy.retention
            if isinstance(x, int | float) and isinstance(y, int | float):
                raw.append((name, float(x), float(y)))
        front = set(pareto_front([(x, y) for _, x, y in raw], lower_x_is_better=axis == "size"))
        return [{"name": n, "x": x, "retention": y, "front": i in front} for i, (n, x, y) in enumerate(raw)]

    def _speedup(self, report: Report) -> float | None:
        if self.latency_key is None:
            return None
        row = report.latency_row(*self.latency_key)
        return row["speedup"] if row else None

    def plot(self, path: str | Path) -> Path:
        """Write the Pareto plot (PNG, SVG or PDF by the file's suffix)."""
        from compress.plots import check_format, save_figure

        check_format(Path(path))  # before drawing: a bad suffix fails at once
        return save_figure(self.figure(), Path(path))

    def figure(self, floor: float | None = None, title: str | None = None):
        """The Pareto plot as a matplotlib Figure: retention against size, and against speed
        (`floor`: a retention floor drawn across it; `title`: instead of the default one)."""
        from compress.plots import pareto_figure

        acc = self.reports[0].accuracy
        metric = f"{acc.task} {acc.metric}" if acc.status == "ok" else "accuracy"
        panels = [("size", "size on disk (candidate / baseline, lower is better)", self.points("size"))]
        if self.latency_key is not None:
            device, runtime = self.latency_key
            label = f"latency speedup, {device}/{runtime} (baseline p50 / candidate p50, higher is better)"
            panels.append(("latency", label, self.points("latency")))
        against = "size and speed" if len(panels) > 1 else "size (no latency measured)"
        title = title or f"{self.reports[0].baseline.get('name')}: retention of {metric} against {against}"
        return pareto_figure(panels, f"retention of {metric} (candidate / baseline)", title, floor=floor)


def compare(
    reports: Sequence[Report | str | Path], *, names: Sequence[str] | None = None, latency: str | None = None
) -> Comparison:
    """Put reports side by side. `latency`: the 'device/runtime' row the speed plot uses
    (default: the first measured one all reports share, else the first measured one).

    Example:
        >>> import compress as cz
        >>> c = cz.compare(["int8.json", "int4.json", "pruned.json"])   # doctest: +SKIP
        >>> c.plot("pareto.png")                                         # doctest: +SKIP
    """
    if not reports:
        raise BadInput("compare needs at least one report.")
    sources = [str(r) if not isinstance(r, Report) else None for r in reports]
    loaded = [r if isinstance(r, Report) else Report.load(r) for r in reports]
    chosen = list(names) if names else _names(loaded, sources)
    if len(chosen) != len(loaded):
        raise BadInput(f"compare: {len(chosen)} names for {len(loaded)} reports.")
    comparison = Comparison(loaded, chosen, None, _notes(loaded, chosen))
    keys = comparison.latency_keys()
    if latency is not None:
        key = tuple(latency.split("/", 1))
        if len(key) != 2 or key not in keys:
            shown = ", ".join(f"{d}/{r}" for d, r in keys) or "none"
            raise BadInput(f"compare: no report has a measured '{latency}' latency row (measured: {shown}).")
        comparison.latency_key = key  # type: ignore[assignment]
    elif keys:
        shared = [k for k in keys if all(r.latency_row(*k) for r in loaded)]
        comparison.latency_key = (shared or keys)[0]
    return comparison


def _names(reports: list[Report], sources: list[str | None]) -> list[str]:
    names = [str(r.candidate.get("name") or f"candidate {i + 1}") for i, r in enumerate(reports)]
    if len(set(names)) == len(names):
        return names
    return [
        Path(s).stem if s else f"{n} ({i + 1})" for i, (n, s) in enumerate(zip(names, sources, strict=True))
    ]


def _notes(reports: list[Report], names: list[str]) -> list[str]:
    notes = []
    baselines = {(r.baseline.get("path"), r.baseline.get("name")) for r in reports}
    if len(baselines) > 1:
        notes.append("the reports have different baselines: ratios are each against its own baseline")
    tasks = {(r.accuracy.task, r.accuracy.metric) for r in reports if r.accuracy.status == "ok"}
    if len(tasks) > 1:
        shown = ", ".join(f"{t}/{m}" for t, m in sorted(tasks, key=str))
        notes.append(f"the reports measured different tasks ({shown}): retentions are not comparable")
    for name, report in zip(names, reports, strict=True):
        if report.accuracy.status != "ok":
            notes.append(f"{name}: accuracy unavailable ({report.accuracy.reason}); left out of the plot")
    return notes
