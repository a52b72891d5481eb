"""`compress prune`: a prune pass (optionally followed by quantization) on a checkpoint, run as a
recipe through the one runner, then the evaluation against it."""

from __future__ import annotations

import click

from compress.cli.common import eval_options, evaluation_from_options, handle_errors
from compress.cli.execute import execute, run_options


@click.command()
@click.argument("source", type=click.Path(path_type=str))
@click.option(
    "--pattern",
    default="unstructured",
    show_default=True,
    metavar="PATTERN",
    help="unstructured, N:M (e.g. 2:4), neurons (FFN), heads (attention) or channels (convolutions).",
)
@click.option(
    "--sparsity", type=float, metavar="F", help="Fraction removed, in [0, 1) (default 0.5; implied by N:M)."
)
@click.option(
    "--method",
    default="magnitude",
    show_default=True,
    help="magnitude; wanda (unstructured, N:M) or activation (structured) use calibration data.",
)
@click.option(
    "--scope",
    type=click.Choice(["layer", "global"]),
    default="layer",
    show_default=True,
    help="Same fraction in every layer, or one ranking across layers.",
)
@click.option(
    "--round-to", type=int, default=1, show_default=True, help="Structured: keep a multiple of N units."
)
@click.option(
    "--calib",
    metavar="PATH|NAME",
    help="Calibration data: a text file, .jsonl/.csv, .npz of inputs, or built-in text "
    "[default: wiki-train]; "
    "structured patterns also trace the model on its first sample.",
)
@click.option("--calib-samples", type=int, metavar="N", help="Calibration samples [default: 128].")
@click.option("--calib-seq-len", type=int, metavar="N", help="Tokens per calibration sample [default: 512].")
@click.option("--embeddings", is_flag=True, help="Prune embedding tables too (unstructured).")
@click.option("--include", multiple=True, metavar="GLOB", help="Only layers whose name matches (repeatable).")
@click.option(
    "--exclude", multiple=True, metavar="GLOB", help="Leave layers whose name matches (repeatable)."
)
@click.option(
    "--quantize",
    "then_quantize",
    type=click.Choice(["int8", "int4"]),
    help="Then quantize the pruned model (weights of Linear layers), in the same recipe.",
)
@run_options
@eval_options
@handle_errors
def prune(source: str, **opts) -> None:
    """Prune SOURCE (a .safetensors file or its folder) and evaluate the result.

    \b
    compress prune model.safetensors --pattern unstructured --sparsity 0.5 -o out/
    compress prune model.safetensors --pattern 2:4 --method wanda --calib data.txt -o out/
    compress prune model.safetensors --pattern neurons --sparsity 0.3 -o out/
    compress prune model.safetensors --pattern heads --sparsity 0.25 --quantize int8 -o out/
    compress prune cnn/model.safetensors --pattern channels --sparsity 0.5 --calib digits.npz -o out/
    """
    from compress.api import prune_recipe, with_calibration
    from compress.passes.quantize.config import QuantizeConfig

    recipe = prune_recipe(
        opts["pattern"],
        opts["sparsity"],
        method=opts["method"],
        scope=opts["scope"],
        round_to=opts["round_to"],
        embeddings=opts["embeddings"],
        include=opts["include"],
        exclude=opts["exclude"],
    )
    calibration = {k: opts[f"calib_{k}"] for k in ("samples", "seq_len") if opts[f"calib_{k}"] is not None}
    recipe = with_calibration(recipe, opts["calib"], calibration)
    then = [QuantizeConfig(scheme=opts["then_quantize"])] if opts["then_quantize"] else []
    recipe = recipe.replace(passes=recipe.passes + then, evaluation=evaluation_from_options(opts))
    describe = recipe.passes[0].describe() + (f", then {opts['then_quantize']}" if then else "")
    execute(recipe, source, opts, command="prune", describe=describe)
