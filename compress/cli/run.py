"""`compress run`: a recipe's passes, evaluation and gate on a checkpoint, through the same API."""

from __future__ import annotations

import sys

import click

from compress.cli.common import (
    emit_report,
    handle_errors,
    history_options,
    json_option,
    make_progress,
    open_history,
    quiet_option,
    stderr,
)
from compress.cli.verdict import junit_option, markdown_option


@click.command(name="run")
@click.argument("recipe_path", metavar="RECIPE", type=click.Path(path_type=str))
@click.argument("source", metavar="MODEL", type=click.Path(path_type=str))
@click.option(
    "-o", "--output", metavar="DIR", help="Output folder (default: <input folder>-<recipe name> beside it)."
)
@click.option("--dry-run", is_flag=True, help="Check everything and print the resolved plan; run nothing.")
@click.option(
    "--cache",
    "cache_dir",
    metavar="DIR",
    envvar="COMPRESS_CACHE",
    default=".compress/cache",
    show_default=True,
    help="Where each pass's result is kept, so a re-run skips the passes already done [env: COMPRESS_CACHE].",
)
@click.option("--no-cache", is_flag=True, help="Keep no intermediate results.")
@junit_option
@markdown_option
@json_option
@history_options[0]
@history_options[1]
@quiet_option
@handle_errors
def run_command(
    recipe_path: str,
    source: str,
    output: str | None,
    dry_run: bool,
    cache_dir: str,
    no_cache: bool,
    junit: str | None,
    markdown: str | None,
    json_path: str | None,
    history_path: str,
    no_history: bool,
    quiet: bool,
) -> None:
    """Run RECIPE (a YAML file) on MODEL (a .safetensors file or its folder): its passes, its
    evaluation and its gate. Exit code 1 when the gate fails.

    \b
    compress run recipes/int8-weight-only.yaml model.safetensors -o out/ --json report.json
    compress run recipes/int4-weight-only.yaml model.safetensors --dry-run
    """
    from compress.recipe import Recipe
    from compress.runner import plan_run, run_recipe

    recipe = Recipe.load(recipe_path)
    cache = None if no_cache else cache_dir
    if dry_run:
        plan = plan_run(recipe, source, output, cache=cache)
        _print_plan(plan)
        click.echo(plan.recipe.to_yaml(), nl=False)
        return
    history = open_history({"history_path": history_path, "no_history": no_history}, check=True)
    result = run_recipe(recipe, source, output, cache=cache, history=history, progress=make_progress(quiet))
    if not quiet:
        reused = f", reused {len(result.steps_reused)} cached" if result.steps_reused else ""
        stderr.print(
            f"wrote [bold]{result.output}[/] ({len(result.steps_run)} passes run{reused}, "
            f"{result.seconds:.1f} s)"
        )
    emit_report(result.report, json_path, quiet)
    if result.verdict is not None:
        from compress.cli.verdict import emit_verdict

        emit_verdict(result.verdict, result.report, junit=junit, quiet=quiet, markdown=markdown)
        if not result.verdict.passed:
            sys.exit(1)


def _print_plan(plan) -> None:
    from rich.table import Table

    stderr.print(f"input  {plan.source} (sha256 {plan.source_sha256[:16]}…)")
    stderr.print(f"output {plan.output}")
    table = Table(title=f"recipe {plan.recipe.name}", title_justify="left")
    for column in ("#", "pass", "settings", "needs data", "cache"):
        table.add_column(column)
    for row in plan.rows():
        table.add_row(*row)
    stderr.print(table)
    if plan.recipe.uses_data():
        c = plan.recipe.calibration
        stderr.print(f"calibration: {c.data}, {c.samples} samples of {c.seq_len} tokens, seed {c.seed}")
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
