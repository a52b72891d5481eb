"""`compress sweep`: several settings on one model, each run through the one runner and evaluated
alike; the table, the Pareto chart, and each point's report."""

from __future__ import annotations

import json
from pathlib import Path

import click

from compress.cli.common import (
    eval_options,
    evaluation_from_options,
    handle_errors,
    json_option,
    make_progress,
    model_spec,
    open_history,
    quiet_option,
    stderr,
    with_module_options,
    write_text,
)


@click.command(name="sweep")
@click.argument("source", metavar="MODEL", type=click.Path(path_type=str))
@click.argument("settings", metavar="SETTING...", nargs=-1, required=True)
@click.option("--plot", metavar="PNG", help="Write the Pareto chart (retention against size and speed).")
@click.option(
    "-o", "--output", metavar="DIR", help="Save every point (model, report.json, recipe.yaml) here."
)
@click.option(
    "--dry-run", is_flag=True, help="Check every setting and print their resolved recipes; run nothing."
)
@click.option(
    "--save-recipe",
    metavar="DIR",
    help="Write each setting's resolved recipe to DIR/<name>.yaml (for `compress run`).",
)
@eval_options
@with_module_options
@json_option
@quiet_option
@handle_errors
def sweep_command(source: str, settings: tuple[str, ...], **opts) -> None:
    """Compress MODEL with each SETTING and compare them: size, retention, speedup, Pareto front.

    A SETTING is a recipe file, or one pass (or a list of passes) written inline as YAML.

    \b
    compress sweep model.safetensors recipes/int8-dynamic.yaml recipes/int4-weight-only.yaml --plot p.png
    compress sweep model.safetensors '{kind: quantize, scheme: int4, group_size: 32}' \\
        '{kind: quantize, scheme: int4, group_size: 128}' --budget 5 --json sweep.json
    compress sweep cnn/model.safetensors --module cnn.py:DigitsCNN --data digits.npz \\
        '{kind: prune, pattern: channels, sparsity: 0.25}' '{kind: prune, pattern: channels, sparsity: 0.5}'
    """
    from compress.sweep import sweep

    spec = model_spec(opts)
    e = evaluation_from_options(opts)
    recipes = [_setting(s, i).replace(evaluation=e) for i, s in enumerate(settings)]
    if opts["dry_run"] or opts["save_recipe"]:
        _resolved(recipes, source, opts)
        if opts["dry_run"]:
            return
    history = open_history(opts, check=True)
    model = spec.load(source) if spec is not None else source  # loaded once for every setting
    result = sweep(
        model,
        recipes,
        task=e.task,
        data=e.data,
        limit=e.limit,
        runtimes=e.runtimes,
        devices=e.devices,
        latency=e.latency,
        task_options=e.task_options,
        history=history,
        progress=make_progress(opts["quiet"]),
    )
    if not opts["quiet"]:
        stderr.print(result.to_markdown(), soft_wrap=True)
    if opts["plot"]:
        result.plot(opts["plot"])
        if not opts["quiet"]:
            stderr.print(f"wrote [bold]{opts['plot']}[/]")
    if opts["output"]:
        for candidate in result:
            candidate.save(Path(opts["output"]) / (candidate.recipe.name or candidate.name))
    if opts["json_path"]:
        rows = {"settings": result.table(), "reports": [c.report.to_dict() for c in result]}
        write_text(opts["json_path"], json.dumps(rows, indent=2, default=str) + "\n")
    if opts["markdown_path"]:
        write_text(opts["markdown_path"], result.to_markdown())


def _resolved(recipes: list, source: str, opts: dict) -> None:
    """Plan each setting against MODEL (every check a run makes); print or save the resolved recipes."""
    from compress.cli.execute import print_plan
    from compress.plan import plan_run
    from compress.sweep import _labels, _slug

    for recipe, label in zip(recipes, _labels(recipes, None), strict=True):
        name = recipe.name or _slug(label)
        plan = plan_run(recipe.replace(name=name), source, None, cache=None)
        if opts["save_recipe"]:
            write_text(str(Path(opts["save_recipe"]) / f"{name}.yaml"), plan.recipe.to_yaml())
        if opts["dry_run"]:
            print_plan(plan)
            click.echo(f"# {name}\n" + plan.recipe.to_yaml() + "---")


def _setting(text: str, index: int):
    """A recipe file, or passes written inline as YAML (a mapping: one pass; a list: several)."""
    from compress.errors import BadInput
    from compress.recipe import Recipe
    from compress.yamlfile import load_yaml

    if Path(text).is_file():
        return Recipe.load(text)
    data = load_yaml(text, f"setting {index + 1}").data
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not all(isinstance(p, dict) for p in data):
        raise BadInput(
            f"setting {index + 1} ({text!r}): is neither a recipe file nor passes written as YAML "
            "(e.g. '{kind: quantize, scheme: int4}')."
        )
    return Recipe.loads(json.dumps({"passes": data}), f"setting {index + 1}")
