"""Showing a gate verdict: a table on stderr; JUnit XML and Markdown on request; GitHub's step summary."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from compress.cli.common import stderr, write_text
from compress.gate import FAIL, PASS, Verdict, fmt

SUMMARY_ENV = "GITHUB_STEP_SUMMARY"
_STYLE = {PASS: ("PASS", "green"), FAIL: ("FAIL", "bold red"), "skip": ("SKIP", "yellow")}

markdown_option = click.option(
    "--markdown", metavar="PATH", help="Write the verdict and report as Markdown to PATH (e.g. a PR comment)."
)
junit_option = click.option(
    "--junit", metavar="PATH", help="Write the verdict as JUnit XML (one test case per check) to PATH."
)


def verdict_table(verdict: Verdict) -> Table:
    table = Table(title=f"gate: {verdict.candidate}", title_justify="left")
    for name, justify in (("rule", "left"), ("value", "right"), ("previous", "right"), ("result", "left")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    table.add_column("reason", overflow="fold")
    for c in verdict.checks:
        label, style = _STYLE[c.status]
        table.add_row(c.name, fmt(c.value), fmt(c.previous), f"[{style}]{label}[/]", c.reason)
    return table


def emit_verdict(
    verdict: Verdict, report: Any, *, junit: str | None, quiet: bool, markdown: str | None = None
) -> None:
    """The verdict table (unless quiet) and summary line on stderr; JUnit, Markdown and step summary."""
    if not quiet:
        stderr.print(verdict_table(verdict))
        if verdict.previous:
            stderr.print(f"[dim]regression rules compared with {verdict.previous}[/]", soft_wrap=True)
        for note in verdict.notes:
            stderr.print(f"[dim]- {note}[/]", soft_wrap=True)
    style = "green" if verdict.passed else "bold red"
    stderr.print(f"[{style}]{verdict.summary()}[/]", soft_wrap=True)
    if junit:
        write_text(junit, verdict.to_junit())
    text = verdict.to_markdown() + "\n" + report.to_markdown()
    if markdown:
        write_text(markdown, text)
    summary = os.environ.get(SUMMARY_ENV)
    if summary:  # GitHub Actions shows this file on the run's page; append, as other steps may write too
        with Path(summary).open("a", encoding="utf-8") as f:
            f.write(text + "\n")
