"""`compress search`: the smallest or fastest model that keeps its accuracy, across pruning,
distillation and quantization; trials on Ray, chosen by Optuna; the Pareto front, and a pick for CI."""

from __future__ import annotations

import json
import sys

import click
from click.core import ParameterSource

from compress.cli.common import (
    eval_options,
    evaluation_from_options,
    handle_errors,
    json_option,
    make_progress,
    quiet_option,
    stderr,
    write_text,
)


@click.command(name="search")
@click.argument("source", metavar="MODEL", type=click.Path(path_type=str))
@click.option("-o", "--output", metavar="DIR", required=True, help="The search's folder (results, study).")
@click.option("--space", metavar="YAML", help="Search space file [default: recipes/search/default.yaml].")
@click.option("--min-retention", type=float, default=0.99, show_default=True, help="Accuracy kept, at least.")
@click.option(
    "--objective",
    type=click.Choice(["size", "latency", "both"]),
    default="both",
    show_default=True,
    help="What the search makes small: size, latency (speedup on the first --device/--runtime), or both.",
)
@click.option("--trials", type=int, metavar="N", help="Stop after N trials [default: 20].")
@click.option("--time-budget", metavar="DURATION", help="Start no trial after this long: 30m, 2h, 90s.")
@click.option("--workers", type=int, metavar="N", help="Trials at once [default: as CPUs and memory allow].")
@click.option("--address", metavar="HOST:PORT", help="Run the trials on this Ray cluster (ray start --head).")
@click.option("--resume", is_flag=True, help="Continue the search in DIR where it stopped.")
@click.option("--seed", type=int, default=0, show_default=True, help="The sampler's seed.")
@click.option(
    "--pick",
    type=click.Choice(["size", "speed", "retention"]),
    help="Choose the best trial by this, under the constraints, and write it to DIR/pick with a CI recipe.",
)
@click.option("--max-size-ratio", type=float, help="--pick: size ratio at most this.")
@click.option("--min-speedup", type=float, help="--pick: speedup on the search's runtime at least this.")
@eval_options
@json_option
@quiet_option
@handle_errors
def search_command(source: str, **opts) -> None:
    """Search MODEL's compressions (pruning, distillation, quantization, mixed precision) for those
    that keep --min-retention of its accuracy and are smallest or fastest: Optuna's multi-objective
    sampler, seeded with the recipes in recipes/, each trial a recipe run on a Ray worker. Speed is
    timed on the runtime compress recommends for this CPU (as --target auto; OpenVINO where it runs)
    unless --runtime names one.

    \b
    compress search model.safetensors --min-retention 0.99 --trials 40 -o out/search
    compress search model.safetensors --objective latency --runtime onnxruntime --time-budget 30m \\
        --address 10.0.0.5:6379 --pick speed -o out/search
    compress search model.safetensors -o out/search --resume --trials 60
    """
    from compress.history import History
    from compress.search.driver import execute
    from compress.search.setup import default_runtime, prepare

    e = evaluation_from_options(opts)
    if opts["devices"] == "cpu,cuda":  # the evaluator's default; a search times where it runs
        e = e.replace(devices=("cpu",))
    if click.get_current_context().get_parameter_source("runtimes") == ParameterSource.DEFAULT:
        e = e.replace(runtimes=(default_runtime(),))  # the fastest runtime measured for this CPU
    history = None if opts["no_history"] else History(opts["history_path"])
    plan = prepare(
        source, opts["output"], opts["min_retention"], opts["objective"], opts["space"], opts["trials"],
        opts["time_budget"], opts["workers"], opts["address"], opts["resume"], opts["seed"], e, history,
    )  # fmt: skip
    quiet = opts["quiet"]
    try:
        result = execute(plan, make_progress(quiet), None if quiet else _trial_line)
    except KeyboardInterrupt:  # Ctrl-C, SIGTERM, SIGHUP: the exit code is handle_errors'
        stderr.print(
            f"the finished trials are kept in {plan.folder}; continue with the same command and --resume.",
            soft_wrap=True,
        )
        raise
    if not quiet:
        stderr.print(result.to_markdown(), soft_wrap=True)
        stderr.print(f"wrote [bold]{plan.folder}[/] (front.md, front.json, pareto.png, trials/)")
    if opts["json_path"]:
        write_text(opts["json_path"], json.dumps(result.to_dict(), indent=2, default=str) + "\n")
    if opts["markdown_path"]:
        write_text(opts["markdown_path"], result.to_markdown())
    if opts["pick"]:
        _pick(result, opts, history, quiet)


def _trial_line(event: dict) -> None:
    if event["event"] == "duplicate":
        stderr.print(
            f"trial {event['trial']}: the recipe of trial {event['of']} ({event['of_name']}), not run again",
            soft_wrap=True,
            markup=False,
        )
        return
    values = event.get("values")
    what = ", ".join(f"{v:.4g}" for v in values) if values else event.get("error", "")
    stderr.print(
        f"trial {event['trial']} {event['name']}: {event['event']} in {event['seconds']:.0f} s ({what})",
        soft_wrap=True,
        markup=False,
    )


def _pick(result, opts: dict, history, quiet: bool) -> None:
    from compress.cli.verdict import emit_verdict

    trial = result.best(
        max_size_ratio=opts["max_size_ratio"], min_speedup=opts["min_speedup"], prefer=opts["pick"]
    )
    recipe = result.ci_recipe(trial, min_speedup=opts["min_speedup"])
    out = result.folder / "pick"
    if not quiet:
        stderr.print(
            f"pick ({opts['pick']}): trial {trial.number} {trial.name}; running its recipe again into {out}"
        )
    run = result.save(trial, out, recipe=recipe, history=history, progress=make_progress(quiet))
    if not quiet:
        stderr.print(f"wrote [bold]{out}[/] (model, recipe.yaml with gate rules for CI, report.json)")
    emit_verdict(run.verdict, run.report, junit=None, quiet=quiet, markdown=None)
    if not run.verdict.passed:
        sys.exit(1)
