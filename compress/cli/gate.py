"""`compress gate`: check a report against rules; exit 0 pass, 1 fail, 2 bad input."""

from __future__ import annotations

import sys

import click

from compress.cli.common import (
    handle_errors,
    history_options,
    open_history,
    quiet_option,
    stderr,
    write_text,
)
from compress.cli.verdict import junit_option, markdown_option


def _pairs(values: tuple[str, ...], option: str) -> list[tuple[str, str]]:
    pairs = []
    for value in values:
        metric, sep, number = value.rpartition("=")
        if not sep or not metric or not number:
            raise click.BadParameter(f"expected METRIC=VALUE, got '{value}'.", param_hint=option)
        pairs.append((metric.strip(), number.strip()))
    return pairs


def _number(text: str, option: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise click.BadParameter(f"'{text}' is not a number.", param_hint=option) from None


def rules_from_options(min_retention, max_size_ratio, min_speedup, mins, maxes, regressions) -> list[dict]:
    rules: list[dict] = []
    if min_retention is not None:
        rules.append({"metric": "accuracy.retention", "min": min_retention})
    if max_size_ratio is not None:
        rules.append({"metric": "size.ratio", "max": max_size_ratio})
    if min_speedup is not None:
        rules.append({"metric": "latency.cpu.speedup", "min": min_speedup})
    rules += [{"metric": m, "min": _number(v, "--min")} for m, v in _pairs(mins, "--min")]
    rules += [{"metric": m, "max": _number(v, "--max")} for m, v in _pairs(maxes, "--max")]
    for metric, value in _pairs(regressions, "--max-regression"):
        if value.endswith("%"):
            rules.append({"metric": metric, "max_regression_pct": _number(value[:-1], "--max-regression")})
        else:
            rules.append({"metric": metric, "max_regression": _number(value, "--max-regression")})
    return rules


@click.command(name="gate")
@click.argument("report_path", metavar="REPORT", type=click.Path(path_type=str))
@click.option(
    "--recipe", "recipe_path", metavar="RECIPE", help="Use the rules of this recipe's gate section."
)
@click.option("--min-retention", type=float, metavar="X", help="accuracy.retention must be >= X.")
@click.option("--max-size-ratio", type=float, metavar="X", help="size.ratio must be <= X.")
@click.option("--min-speedup", type=float, metavar="X", help="latency.cpu.speedup must be >= X.")
@click.option("--min", "mins", multiple=True, metavar="METRIC=X", help="Any metric >= X (repeatable).")
@click.option("--max", "maxes", multiple=True, metavar="METRIC=X", help="Any metric <= X (repeatable).")
@click.option(
    "--max-regression",
    "regressions",
    multiple=True,
    metavar="METRIC=X[%]",
    help="At most X (or X%) worse than the previous accepted run (repeatable).",
)
@click.option(
    "--against",
    metavar="last|REPORT",
    help="The previous run to compare with: 'last' (the last run of this model and recipe that passed "
    "its gate, from the history) or a report file. Every rule without its own max_regression then also "
    "checks that its metric is at most --tolerance percent worse.",
)
@click.option(
    "--tolerance",
    type=float,
    default=2.0,
    show_default=True,
    metavar="PCT",
    help="With --against: how many percent worse than the previous run a metric may be.",
)
@junit_option
@markdown_option
@click.option(
    "--json", "json_path", metavar="PATH", help="Write the verdict as JSON to PATH ('-' for stdout)."
)
@history_options[0]
@history_options[1]
@quiet_option
@handle_errors
def gate_command(
    report_path: str,
    recipe_path: str | None,
    min_retention: float | None,
    max_size_ratio: float | None,
    min_speedup: float | None,
    mins: tuple[str, ...],
    maxes: tuple[str, ...],
    regressions: tuple[str, ...],
    against: str | None,
    tolerance: float,
    junit: str | None,
    markdown: str | None,
    json_path: str | None,
    history_path: str,
    no_history: bool,
    quiet: bool,
) -> None:
    """Check REPORT (a compress JSON report) against gate rules.

    Exit code 0 when every rule passes, 1 when one fails, 2 on bad input (a rule on a metric the
    report does not have, a report of another schema, a locked or corrupt history). With
    $GITHUB_STEP_SUMMARY set, the verdict is appended to it as Markdown.

    \b
    compress gate report.json --recipe recipes/int8-weight-only.yaml
    compress gate report.json --min-retention 0.99 --max-size-ratio 0.3 --min-speedup 1.5 --against last
    compress gate report.json --max-regression accuracy.retention=0.005 --junit gate.xml
    """
    import json

    from compress.cli.verdict import emit_verdict
    from compress.errors import BadInput
    from compress.gate import Rule, check_bounds, gate
    from compress.history import UnknownModel, canonical_sha256, model_sha256, recipe_sha256
    from compress.recipe import Recipe
    from compress.report import Report

    report = Report.load(report_path)
    rules: list[Rule] = list(Recipe.load(recipe_path).gate) if recipe_path else []
    options = rules_from_options(min_retention, max_size_ratio, min_speedup, mins, maxes, regressions)
    rules += [Rule.parse(r, f"rule {r['metric']}") for r in options]
    if not rules:
        raise BadInput("no gate rules: give --recipe RECIPE or rule options such as --min-retention 0.99.")
    check_bounds(rules)
    if against:
        if not 0 <= tolerance < float("inf"):  # also refuses nan
            raise BadInput(f"--tolerance must be a number >= 0, got {tolerance}.")
        rules = [r if r.compares_with_previous else r.replace(max_regression_pct=tolerance) for r in rules]
    history = open_history({"history_path": history_path, "no_history": no_history}, check=True)
    previous, label = None, None
    if against and against != "last":
        previous, label = Report.load(against), f"report {against}"
    elif any(r.compares_with_previous for r in rules):
        if history is None:
            raise BadInput("comparing with the last accepted run needs the history; drop --no-history.")
        run = history.last_accepted(
            model_sha256(report), recipe_sha256(report), exclude_report=canonical_sha256(report.to_dict())
        )
        if run is not None:
            previous, label = run.load_report(), run.label()
    verdict = gate(report, rules, previous, previous_label=label)
    emit_verdict(verdict, report, junit=junit, quiet=quiet, markdown=markdown)
    if json_path:
        write_text(json_path, json.dumps(verdict.to_dict(), indent=2) + "\n")
    if history is not None:
        try:
            history.record_verdict(report, verdict)
        except UnknownModel as exc:  # the verdict stands; only its record is missing, and we say so
            stderr.print(f"[yellow]note:[/] verdict not recorded in {history.path}: {exc}", soft_wrap=True)
    if not verdict.passed:
        sys.exit(1)
