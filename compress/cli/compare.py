"""`compress compare`: reports side by side, and a Pareto plot of retention against size and speed."""

from __future__ import annotations

import click

from compress.cli.common import handle_errors, json_option, quiet_option, stderr, write_text


@click.command()
@click.argument("reports", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--plot", "plot_path", metavar="PATH", help="Write the Pareto plot (.png, .svg or .pdf).")
@click.option("--markdown", "markdown_path", metavar="PATH", help="Write the table as Markdown.")
@click.option(
    "--latency", metavar="DEVICE/RUNTIME", help="Latency row for the speed plot, e.g. cpu/onnxruntime."
)
@click.option(
    "--name", "names", multiple=True, metavar="NAME", help="Column names, one per report, in order."
)
@json_option
@quiet_option
@handle_errors
def compare_command(
    reports: tuple[str, ...],
    plot_path: str | None,
    markdown_path: str | None,
    latency: str | None,
    names: tuple[str, ...],
    json_path: str | None,
    quiet: bool,
) -> None:
    """Put any number of JSON REPORTS (from eval or quantize) side by side.

    \b
    compress compare int8.json int4.json pruned.json --plot pareto.png
    compress compare *.json --markdown compare.md --latency cpu/onnxruntime
    """
    import json

    from compress.cli.render import comparison_table
    from compress.compare import compare

    comparison = compare(list(reports), names=names or None, latency=latency)
    if not quiet:
        stderr.print(comparison_table(comparison))
        for note in comparison.notes:
            stderr.print(f"[dim]- {note}[/]", soft_wrap=True)
    if plot_path:
        comparison.plot(plot_path)
        if not quiet:
            stderr.print(f"wrote [bold]{plot_path}[/]")
    if markdown_path:
        write_text(markdown_path, comparison.to_markdown())
    if json_path:
        write_text(json_path, json.dumps(comparison.to_dict(), indent=2) + "\n")
