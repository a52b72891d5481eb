"""The one road of the commands that compress: build a Recipe, then plan or run it here.

`compress quantize`, `prune`, `distill` and `run` differ only in how they build the recipe; this
module gives them the same options (output, --dry-run, --save-recipe, the step cache, --no-eval,
--module for a model of the user's own class, reports, history) and the same ending: the plan
printed, or the run's result, report, gate verdict and exit code (1 when the gate fails).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.markup import escape

from compress.cli.common import (
    emit_report,
    json_option,
    make_progress,
    model_spec,
    module_options,
    open_history,
    quiet_option,
    stderr,
    write_text,
)
from compress.cli.verdict import junit_option


def run_options(fn: Callable) -> Callable:
    """Options every compressing command shares (the evaluation's own are in eval_options)."""
    options = [
        click.option(
            "-o", "--output", metavar="DIR", help="Output folder (default: <input folder>-<label> beside it)."
        ),
        click.option(
            "--dry-run", is_flag=True, help="Check everything and print the resolved plan; run nothing."
        ),
        click.option(
            "--save-recipe",
            metavar="PATH",
            help="Write the resolved recipe (every setting spelled out) to PATH, for `compress run`.",
        ),
        click.option(
            "--cache",
            "cache_dir",
            metavar="DIR",
            envvar="COMPRESS_CACHE",
            default=".compress/cache",
            show_default=True,
            help="Where each pass's result is kept, so a re-run skips the passes already done "
            "[env: COMPRESS_CACHE].",
        ),
        click.option("--no-cache", is_flag=True, help="Keep no intermediate results."),
        click.option("--no-eval", is_flag=True, help="Write the output and stop; no evaluation."),
        *module_options,
        junit_option,
        json_option,
        quiet_option,
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def execute(recipe, source: str, opts: dict, *, command: str, device: str = "cpu", describe: str = "") -> Any:
    """Plan or run `recipe` on `source` as the options say; print the outcome; exit 1 on a failed gate.

    `opts` holds the run options (run_options) and, for commands with them, the evaluation's
    (markdown_path, history_path, no_history). Returns the RunResult (None for a dry run).
    """
    from compress.plan import default_output_dir, plan_run
    from compress.runner import run

    spec = model_spec(opts)
    if spec is not None:  # --module replaces a recipe's model section, and the saved recipe says so
        recipe = recipe.replace(model=spec)
    output = opts["output"] or str(default_output_dir(source, recipe.name or command))
    cache = None if opts["no_cache"] else opts["cache_dir"]
    if opts["dry_run"]:
        plan = plan_run(recipe, source, output, cache=cache)
        print_plan(plan)
        if opts.get("save_recipe"):
            write_text(opts["save_recipe"], plan.recipe.to_yaml())
        click.echo(plan.recipe.to_yaml(), nl=False)
        return None
    history = None if opts["no_eval"] else open_history(opts, check=True)
    result = run(
        recipe,
        source,
        output,
        cache=cache,
        history=history,
        evaluate=not opts["no_eval"],
        device=device,
        progress=make_progress(opts["quiet"]),
        command=command,
    )
    if opts.get("save_recipe"):
        write_text(opts["save_recipe"], result.plan.recipe.to_yaml())
    _print_outcome(result, opts, describe)
    return result


def _print_outcome(result, opts: dict, describe: str) -> None:
    quiet = opts["quiet"]
    if not quiet:
        reused = f", reused {len(result.steps_reused)} cached" if result.steps_reused else ""
        what = f"{describe}; " if describe else ""
        ran = len(result.steps_run)
        stderr.print(
            f"wrote [bold]{result.weights}[/] ({what}{ran} pass{'' if ran == 1 else 'es'} run{reused}; "
            f"{result.seconds:.1f} s in all)"
        )
        for path in _exported(result):
            stderr.print(f"wrote [bold]{path}[/]")
    if result.report is None:
        if not quiet and result.artifact is not None:
            from compress.evaluation import change_notes

            for note in change_notes(result.artifact.changes):
                stderr.print(f"[dim]- {escape(note)}[/]", soft_wrap=True, emoji=False)
        return
    markdown = opts.get("markdown_path") or opts.get("markdown")
    emit_report(result.report, opts["json_path"], quiet, None if result.verdict else markdown)
    if result.verdict is not None:
        from compress.cli.verdict import emit_verdict

        emit_verdict(result.verdict, result.report, junit=opts.get("junit"), quiet=quiet, markdown=markdown)
        if not result.verdict.passed:
            sys.exit(1)


def _exported(result) -> list[Path]:
    names = {"onnx": "model.onnx", "openvino": "openvino", "compressed-tensors": "compressed-tensors"}
    out = []
    for step in result.plan.recipe.export:
        path = result.output / names.get(step.format, step.format)
        if path.exists():
            out.append(path)
    return out


def print_plan(plan) -> None:
    from rich.table import Table

    source = plan.source if plan.source is not None else "a model in memory"
    stderr.print(f"input  {source} (sha256 {plan.source_sha256[:16]}…)")
    stderr.print(f"output {plan.output}")
    if plan.recipe.model is not None:
        stderr.print(f"model  {plan.recipe.model.describe()}")
    table = Table(title=f"recipe {plan.recipe.name}", title_justify="left")
    for column in ("#", "pass", "settings [road]", "data", "cache"):
        table.add_column(column)
    for row in plan.rows():
        table.add_row(*row)
    stderr.print(table)
    for step in plan.recipe.export:
        stderr.print(f"export: {step.describe()}")
    e = plan.recipe.evaluation
    stderr.print(
        f"evaluate: task {e.task}, devices {', '.join(e.devices)}, runtimes {', '.join(e.runtimes)}"
        + (f", data {e.data}" if e.data else "")
    )
    rules = [r.to_dict() for r in plan.recipe.gate]
    stderr.print("gate: " + ("; ".join(_rule_text(r) for r in rules) if rules else "no rules"))
    stderr.print("[dim]dry run: nothing was run; the resolved recipe follows on stdout[/]")


def _rule_text(rule: dict) -> str:
    parts = [f"{k} {v}" for k, v in rule.items() if k != "metric"]
    return f"{rule['metric']} " + ", ".join(parts)
