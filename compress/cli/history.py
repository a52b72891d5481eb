"""`compress history`: the trend of past runs of a model, as a table and optionally a plot."""

from __future__ import annotations

import json
from pathlib import Path

import click

from compress.cli.common import handle_errors, history_options, stderr, write_text

DEFAULT_METRICS = ("accuracy.retention", "size.ratio", "latency.cpu.speedup")


def resolve_model(history, model: str) -> str:
    """A model's hash from a checkpoint path, or from a hash (or a unique prefix of one) in the history."""
    from compress.checkpoint import sha256_file
    from compress.errors import BadInput
    from compress.model import resolve_checkpoint

    if Path(model).exists():
        return sha256_file(resolve_checkpoint(model))
    known = [m[0] for m in history.models()]
    matches = [h for h in known if h.startswith(model.lower())] if len(model) >= 6 else []
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise BadInput(f"'{model}' matches {len(matches)} model hashes in {history.path}; give more of it.")
    raise BadInput(f"{model}: no such checkpoint, and no model hash in {history.path} starts with it.")


def metric_of(run, path: str) -> float | None:
    from compress.report import is_number

    value = run.load_report().metric(path)
    return float(value) if is_number(value) else None


@click.command(name="history")
@click.argument("model", required=False)
@click.option(
    "--metric",
    "metrics",
    multiple=True,
    metavar="PATH",
    help=f"Report metrics to show (repeatable; default: {', '.join(DEFAULT_METRICS)}).",
)
@click.option("--recipe", "recipe_hash", metavar="HASH", help="Only runs of this recipe hash (or prefix).")
@click.option("--last", type=int, default=30, show_default=True, metavar="N", help="Show the last N runs.")
@click.option("--plot", "plot_path", metavar="PNG", help="Draw the trend of each metric into PNG.")
@click.option("--json", "json_path", metavar="PATH", help="Write the runs as JSON to PATH ('-' for stdout).")
@history_options[0]
@handle_errors
def history_command(
    model: str | None,
    metrics: tuple[str, ...],
    recipe_hash: str | None,
    last: int,
    plot_path: str | None,
    json_path: str | None,
    history_path: str,
) -> None:
    """The trend of past runs of MODEL (a checkpoint, or its hash) from the history database;
    without MODEL, the models the history holds.

    \b
    compress history model.safetensors
    compress history model.safetensors --metric accuracy.retention --plot trend.png
    """
    from rich.table import Table

    from compress.history import History

    history = History(history_path)
    if model is None:
        table = Table(title=f"models in {history.path}", title_justify="left")
        for column in ("model sha256", "name", "runs", "last run"):
            table.add_column(column)
        for digest, name, count, recorded in history.models():
            table.add_row(digest[:16], name or "", str(count), recorded)
        stderr.print(table if table.row_count else f"no runs recorded in {history.path}")
        return
    digest = resolve_model(history, model)
    runs = [r for r in history.runs(digest) if not recipe_hash or r.recipe_sha256.startswith(recipe_hash)]
    runs = runs[-last:] if last > 0 else runs
    metrics = metrics or DEFAULT_METRICS
    rows = [
        {
            "id": r.id,
            "recorded": r.recorded,
            "command": r.command,
            "recipe_sha256": r.recipe_sha256,
            "candidate": r.report.get("candidate", {}).get("name"),
            "gate": r.gate_status,
            **{m: metric_of(r, m) for m in metrics},
        }
        for r in runs
    ]
    if json_path:
        write_text(json_path, json.dumps(rows, indent=2) + "\n")
    if not rows:
        stderr.print(f"no runs of model {digest[:16]} recorded in {history.path}")
        return
    table = Table(title=f"history of model {digest[:16]} ({history.path})", title_justify="left")
    for column in ("run", "recorded", "command", "recipe", "candidate", "gate", *metrics):
        table.add_column(column, justify="right" if column in metrics else "left")
    style = {"pass": "[green]pass[/]", "fail": "[bold red]fail[/]", None: "[dim]-[/]"}
    for row in rows:
        values = ["" if row[m] is None else f"{row[m]:.4g}" for m in metrics]
        table.add_row(
            str(row["id"]),
            row["recorded"],
            row["command"],
            row["recipe_sha256"][:8],
            row["candidate"] or "",
            style[row["gate"]],
            *values,
        )
    stderr.print(table)
    if plot_path:
        draw_trend(rows, metrics, Path(plot_path), f"model {digest[:12]}")
        stderr.print(f"drew {plot_path}")


def draw_trend(rows: list[dict], metrics: tuple[str, ...], path: Path, title: str) -> None:
    """One panel per metric: a line per recipe, points coloured by gate status."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from compress.checkpoint import atomic_file

    colours = {"pass": "tab:green", "fail": "tab:red", None: "tab:gray"}
    fig, axes = plt.subplots(len(metrics), 1, figsize=(7, 2.4 * len(metrics)), sharex=True, squeeze=False)
    recipes = sorted({r["recipe_sha256"] for r in rows})
    for ax, metric in zip(axes[:, 0], metrics, strict=True):
        for recipe in recipes:
            points = [(r["id"], r[metric], r["gate"]) for r in rows if r["recipe_sha256"] == recipe]
            points = [p for p in points if p[1] is not None]
            if not points:
                continue
            ax.plot([p[0] for p in points], [p[1] for p in points], "-", color="0.7", zorder=1)
            ax.scatter(
                [p[0] for p in points], [p[1] for p in points], c=[colours[p[2]] for p in points], zorder=2
            )
        ax.set_ylabel(metric, fontsize=8)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("run (green: gate passed, red: failed, grey: no gate)")
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
