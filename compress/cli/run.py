"""`compress run`: a recipe's passes, export steps, evaluation and gate on a checkpoint."""

from __future__ import annotations

import click

from compress.cli.common import handle_errors, history_options
from compress.cli.execute import execute, run_options
from compress.cli.verdict import markdown_option


@click.command(name="run")
@click.argument("recipe_path", metavar="RECIPE", type=click.Path(path_type=str))
@click.argument("source", metavar="MODEL", type=click.Path(path_type=str))
@run_options
@markdown_option
@history_options[0]
@history_options[1]
@handle_errors
def run_command(recipe_path: str, source: str, **opts) -> None:
    """Run RECIPE (a YAML file) on MODEL (a .safetensors file or its folder): its passes, its export
    steps, its evaluation and its gate. Exit code 1 when the gate fails. A recipe's `model:` section
    imports and runs the code it names: run only recipes you trust.

    \b
    compress run recipes/int8-dynamic.yaml model.safetensors -o out/ --json report.json
    compress run recipes/int4-weight-only.yaml model.safetensors --dry-run
    """
    from compress.recipe import Recipe

    recipe = Recipe.load(recipe_path)
    execute(recipe, source, opts, command="run")
