"""The regression gate: a pure function (report, rules, previous report) -> verdict. No I/O.

A rule names a report metric by dotted path (see `Report.metric`) and bounds it: `min`, `max`, and
`max_regression` / `max_regression_pct`, "no worse than the previous accepted run by more than X".
Latency is gated only through ratios measured in one run (speedup against the baseline, timed
interleaved): absolute times differ between machines and between runs, so a rule on them is refused.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from compress.config import Settings, suggest
from compress.errors import BadInput
from compress.report import Report, is_number

PASS, FAIL, SKIP = "pass", "fail", "skip"

# Which way is better, for regression rules on metrics whose direction the report does not state.
_HIGHER_IS_BETTER = {
    "accuracy.retention": True,
    "accuracy.details.embedding_cosine_mean": True,
    "accuracy.details.embedding_cosine_min": True,
    "accuracy.details.macro_f1": True,
    "accuracy.details.top1_agreement": True,
    "accuracy.details.cosine_min": True,
    "accuracy.details.kl": False,
    "size.ratio": False,
    "size.bytes": False,
    "size.bits_per_weight": False,
    "size.parameters": False,
    "tensor_summary.sqnr_db_min": True,
    "tensor_summary.sqnr_db_mean": True,
}


@dataclass(frozen=True, kw_only=True)
class Rule(Settings):
    """One bound on one metric. Give at least one of min, max, max_regression, max_regression_pct.

    metric: dotted path into the report: accuracy.retention, size.ratio, latency.cpu.speedup, ...
    min / max: the value must be >= min and <= max.
    max_regression: at most this much worse than the previous accepted run (in the metric's units).
    max_regression_pct: at most this many percent worse than the previous accepted run's value.
    higher_is_better: which way is worse, for metrics compress cannot tell (e.g. accuracy.details.*).
    """

    metric: str
    min: float | None = None
    max: float | None = None
    max_regression: float | None = None
    max_regression_pct: float | None = None
    higher_is_better: bool | None = None

    @classmethod
    def parse(cls, data: Any, where: str) -> Rule:
        if not isinstance(data, Mapping):
            raise BadInput(f"{where}: a gate rule is a mapping such as {{metric: size.ratio, max: 0.3}}.")
        if "metric" not in data:
            raise BadInput(f"{where}: missing 'metric' (e.g. accuracy.retention, size.ratio).")
        return cls.from_dict(data, where)

    def validate(self) -> None:
        bounds = (self.min, self.max, self.max_regression, self.max_regression_pct)
        if all(b is None for b in bounds):
            raise BadInput(
                f"gate rule on '{self.metric}': give min, max, max_regression or max_regression_pct."
            )
        parts = self.metric.split(".")
        if not all(parts):
            raise BadInput(f"gate rule: '{self.metric}' is not a dotted metric path like 'size.ratio'.")
        if parts[0] == "latency" and (parts[-1].endswith("_ms") or parts[-1].endswith("throughput")):
            device = parts[1] if len(parts) > 2 else "cpu"
            raise BadInput(
                f"gate rule on '{self.metric}': absolute times differ between machines and runs; gate on "
                f"'latency.{device}.speedup', the ratio to the baseline measured in the same run."
            )
        if self.min is not None and self.max is not None and self.min > self.max:
            raise BadInput(f"gate rule on '{self.metric}': min {self.min} is above max {self.max}.")
        for name in ("max_regression", "max_regression_pct"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise BadInput(f"gate rule on '{self.metric}': {name} must be >= 0, got {value}.")

    @property
    def compares_with_previous(self) -> bool:
        return self.max_regression is not None or self.max_regression_pct is not None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in super().to_dict().items() if v is not None}


@dataclass
class Check:
    """One condition of one rule, evaluated."""

    metric: str
    condition: str  # ">= 0.99", "<= 0.3", "within 1% of previous"
    status: str  # pass | fail | skip
    value: float | None
    limit: float | None
    previous: float | None
    reason: str

    @property
    def name(self) -> str:
        return f"{self.metric} {self.condition}"


@dataclass
class Verdict:
    """The outcome of a gate: every check, and which run the regression rules compared with."""

    checks: list[Check]
    candidate: str = ""
    previous: str | None = None  # a description of the previous accepted run, when there was one
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(c.status != FAIL for c in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.status == FAIL]

    def summary(self) -> str:
        counts = {s: sum(c.status == s for c in self.checks) for s in (PASS, FAIL, SKIP)}
        skipped = f", {counts[SKIP]} skipped" if counts[SKIP] else ""
        if self.passed:
            return f"gate passed: {counts[PASS]} of {len(self.checks)} checks passed{skipped}"
        reasons = "; ".join(c.reason for c in self.failures)
        return f"gate failed: {counts[FAIL]} of {len(self.checks)} checks failed{skipped}: {reasons}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "candidate": self.candidate,
            "previous": self.previous,
            "checks": [asdict(c) for c in self.checks],
            "notes": self.notes,
        }

    def to_markdown(self) -> str:
        icon = {PASS: "✅ pass", FAIL: "❌ fail", SKIP: "⏭️ skip"}
        lines = [
            f"### compress gate: {'passed' if self.passed else 'FAILED'} ({self.candidate})",
            "",
            "| rule | value | previous | result | reason |",
            "|---|---:|---:|---|---|",
        ]
        for c in self.checks:
            lines.append(
                f"| `{c.name}` | {fmt(c.value)} | {fmt(c.previous)} | {icon[c.status]} | {c.reason} |"
            )
        if self.previous:
            lines += ["", f"Compared with {self.previous}."]
        lines += [f"- {n}" for n in self.notes]
        return "\n".join(lines) + "\n"

    def _repr_html_(self) -> str:
        import html

        color = {PASS: "green", FAIL: "red", SKIP: "gray"}
        rows = "".join(
            f"<tr><td><code>{html.escape(c.name)}</code></td><td>{fmt(c.value)}</td>"
            f"<td>{fmt(c.previous)}</td><td style='color:{color[c.status]}'><b>{c.status}</b></td>"
            f"<td>{html.escape(c.reason)}</td></tr>"
            for c in self.checks
        )
        notes = "".join(f"<li>{html.escape(n)}</li>" for n in self.notes)
        return (
            f"<div><b>{html.escape(self.summary())}</b><table><thead><tr><th>rule</th><th>value</th>"
            f"<th>previous</th><th>result</th><th>reason</th></tr></thead><tbody>{rows}</tbody></table>"
            + (f"<ul>{notes}</ul>" if notes else "")
            + "</div>"
        )

    def to_junit(self, suite: str = "compress gate") -> str:
        """JUnit XML with one test case per check, so a CI system lists each rule as a test."""
        import xml.etree.ElementTree as ET

        failures = len(self.failures)
        skipped = sum(c.status == SKIP for c in self.checks)
        counts = {"tests": str(len(self.checks)), "failures": str(failures), "errors": "0"}
        root = ET.Element("testsuites", name=suite, **counts)
        node = ET.SubElement(
            root, "testsuite", name=f"{suite}: {self.candidate}", skipped=str(skipped), **counts
        )
        for c in self.checks:
            case = ET.SubElement(node, "testcase", classname="compress.gate", name=c.name, time="0")
            if c.status == FAIL:
                ET.SubElement(case, "failure", message=c.reason, type="GateFailure").text = c.reason
            elif c.status == SKIP:
                ET.SubElement(case, "skipped", message=c.reason)
            ET.SubElement(
                case, "system-out"
            ).text = f"value: {fmt(c.value)}; limit: {fmt(c.limit)}; previous: {fmt(c.previous)}"
        ET.indent(root)
        return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def fmt(x: float | None) -> str:
    return "" if x is None else f"{x:.6g}"


def gate(
    report: Report,
    rules: Iterable[Rule | Mapping[str, Any]],
    previous: Report | None = None,
    *,
    previous_label: str | None = None,
) -> Verdict:
    """Check `report` against `rules`; regression rules compare with `previous` (skipped without one).

    A rule on a metric the report does not have is bad input (BadInput), not a failed check: it
    names the metric and lists the ones the report has, or says why the measurement is unavailable.

    Example:
        >>> import compress as cz
        >>> verdict = cz.gate(report, [{"metric": "accuracy.retention", "min": 0.99}])   # doctest: +SKIP
        >>> verdict.passed                                                               # doctest: +SKIP
    """
    checks: list[Check] = []
    parsed = [r if isinstance(r, Rule) else Rule.parse(r, f"gate[{i}]") for i, r in enumerate(rules)]
    if not parsed:
        raise BadInput("gate: no rules to check.")
    check_bounds(parsed)
    for rule in parsed:
        value = metric_value(report, rule.metric, "the report")
        if rule.min is not None:
            checks.append(_bound_check(rule.metric, value, rule.min, lower=True))
        if rule.max is not None:
            checks.append(_bound_check(rule.metric, value, rule.max, lower=False))
        if rule.compares_with_previous:
            checks.append(_regression_check(rule, value, report, previous))
    notes = []
    if previous is None and any(r.compares_with_previous for r in parsed):
        notes.append("no previous accepted run of this model and recipe: regression checks skipped")
    return Verdict(
        checks=checks,
        candidate=str(report.candidate.get("name") or ""),
        previous=(previous_label or "the previous report") if previous is not None else None,
        notes=notes,
    )


def check_bounds(rules: Iterable[Rule]) -> None:
    """BadInput when the rules on one metric cannot all pass (a minimum above a maximum): such a gate
    would fail every run whatever it measured."""
    lowest_max: dict[str, float] = {}
    highest_min: dict[str, float] = {}
    for rule in rules:
        if rule.min is not None:
            highest_min[rule.metric] = max(rule.min, highest_min.get(rule.metric, -math.inf))
        if rule.max is not None:
            lowest_max[rule.metric] = min(rule.max, lowest_max.get(rule.metric, math.inf))
    for metric, low in highest_min.items():
        high = lowest_max.get(metric)
        if high is not None and low > high:
            raise BadInput(
                f"gate rules on '{metric}' contradict each other: min {fmt(low)} is above max {fmt(high)}, "
                "so no value can pass."
            )


def _status(ok: bool) -> str:
    return PASS if ok else FAIL


def _bound_check(metric: str, value: float, bound: float, lower: bool) -> Check:
    """value >= bound (a lower bound) or value <= bound (an upper one)."""
    ok = value >= bound if lower else value <= bound
    sign = ">=" if lower else "<="
    if ok:
        reason = f"{metric} = {fmt(value)} {sign} {fmt(bound)}"
    else:
        reason = (
            f"{metric} is {fmt(value)}, {'below the minimum' if lower else 'above the maximum'} {fmt(bound)}"
        )
    return Check(metric, f"{sign} {fmt(bound)}", _status(ok), value, bound, None, reason)


def _regression_check(rule: Rule, value: float, report: Report, previous: Report | None) -> Check:
    higher = _higher_is_better(rule, report)
    allowed_text = (
        f"{fmt(rule.max_regression_pct)}%"
        if rule.max_regression_pct is not None
        else fmt(rule.max_regression)
    )
    condition = f"within {allowed_text} of previous"
    if previous is None:
        return Check(
            rule.metric, condition, SKIP, value, None, None, "no previous accepted run to compare with"
        )
    before = previous.metric(rule.metric)
    if not is_number(before):
        return Check(
            rule.metric, condition, SKIP, value, None, None, f"the previous accepted run has no {rule.metric}"
        )
    before = float(before)
    slack = [rule.max_regression] if rule.max_regression is not None else []
    if rule.max_regression_pct is not None:
        slack.append(abs(before) * rule.max_regression_pct / 100)
    allowed = min(slack)  # both given: the stricter one
    limit = before - allowed if higher else before + allowed
    worse_by = (before - value) if higher else (value - before)
    ok = value >= limit if higher else value <= limit
    if ok:
        reason = f"{rule.metric} = {fmt(value)}, previous {fmt(before)} (limit {fmt(limit)})"
    else:
        reason = (
            f"{rule.metric} is {fmt(value)}, worse than the previous accepted run's {fmt(before)} by "
            f"{fmt(worse_by)} (allowed {fmt(allowed)})"
        )
    return Check(rule.metric, condition, _status(ok), value, limit, before, reason)


def _higher_is_better(rule: Rule, report: Report) -> bool:
    if rule.higher_is_better is not None:
        return rule.higher_is_better
    if rule.metric in _HIGHER_IS_BETTER:
        return _HIGHER_IS_BETTER[rule.metric]
    if rule.metric in ("accuracy.value", "accuracy.baseline"):
        return report.accuracy.higher_is_better
    if rule.metric.startswith("latency.") and rule.metric.endswith(".speedup"):
        return True
    if (rule.min is None) != (rule.max is None):
        return rule.min is not None  # a lower bound says higher is better, an upper bound the reverse
    raise BadInput(
        f"gate rule on '{rule.metric}': compress cannot tell whether higher is better for this metric; "
        "add higher_is_better: true or false."
    )


def metric_value(report: Report, path: str, where: str) -> float:
    """The numeric value of `path` in `report`; BadInput naming the metric when it has none."""
    value = report.metric(path)
    if value is None:
        reason = report.unavailable_reason(path)
        if reason:
            raise BadInput(f"gate rule on '{path}': {where} has no value for it ({reason}).")
        known = report.metric_paths()
        shown = ", ".join(known[:12]) + (" ..." if len(known) > 12 else "")
        raise BadInput(
            f"gate rule on '{path}': {where} has no such metric{suggest(path, known)}; "
            f"metrics it has: {shown}."
        )
    if not is_number(value):
        raise BadInput(f"gate rule on '{path}': {where} gives {value!r}, not a number.")
    result = float(value)
    if math.isnan(result):
        raise BadInput(f"gate rule on '{path}': {where} gives NaN, which no bound can check.")
    return result
