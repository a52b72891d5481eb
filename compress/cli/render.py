"""Rich rendering of reports for the terminal."""

from __future__ import annotations

from rich.table import Table

from compress.report import Report


def report_table(report: Report) -> Table:
    title = f"{report.candidate.get('name')} vs {report.baseline.get('name')}"
    table = Table(title=title, title_justify="left")
    table.add_column("")
    table.add_column("baseline", justify="right")
    table.add_column("candidate", justify="right")
    table.add_column("change")
    for what, base, cand, change in report.headline_rows():
        style = "red" if "slower" in change or cand == "unavailable" else None
        table.add_row(what, base, cand, change, style=style)
    return table


def comparison_table(comparison) -> Table:
    table = Table(title=f"compared with {comparison.reports[0].baseline.get('name')}", title_justify="left")
    table.add_column("")
    table.add_column("baseline", justify="right")
    for name in comparison.names:
        table.add_column(name, justify="right")
    for row in comparison.rows():
        table.add_row(*row)
    return table
