"""`compress prune`: one prune pass (optionally followed by quantization) on a checkpoint, then the
evaluation against it."""

from __future__ import annotations

import click

from compress.cli.common import (
    emit_report,
    eval_options,
    evaluate_from_options,
    handle_errors,
    json_option,
    make_progress,
    quiet_option,
    stderr,
)


@click.command()
@click.argument("source", type=click.Path(path_type=str))
@click.option(
    "-o", "--output", metavar="DIR", help="Output folder (default: <input folder>-pruned beside it)."
)
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
    help="Calibration data: a text file, .jsonl/.csv, .npz of inputs, or built-in text (default wiki-train).",
)
@click.option("--calib-samples", type=int, default=64, show_default=True, help="Calibration samples.")
@click.option(
    "--calib-seq-len", type=int, default=256, show_default=True, help="Tokens per calibration sample."
)
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
@click.option("--no-eval", is_flag=True, help="Write the checkpoint and stop; no evaluation.")
@eval_options
@json_option
@quiet_option
@handle_errors
def prune(
    source: str,
    output: str | None,
    pattern: str,
    sparsity: float | None,
    method: str,
    scope: str,
    round_to: int,
    calib: str | None,
    calib_samples: int,
    calib_seq_len: int,
    embeddings: bool,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    then_quantize: str | None,
    no_eval: bool,
    json_path: str | None,
    quiet: bool,
    **eval_opts,
) -> None:
    """Prune SOURCE (a .safetensors file or its folder) and evaluate the result.

    \b
    compress prune model.safetensors --pattern unstructured --sparsity 0.5 -o out/
    compress prune model.safetensors --pattern 2:4 --method wanda --calib data.txt -o out/
    compress prune model.safetensors --pattern neurons --sparsity 0.3 -o out/
    compress prune model.safetensors --pattern heads --sparsity 0.25 --quantize int8 -o out/
    compress prune cnn/model.safetensors --pattern channels --sparsity 0.5 --calib digits.npz -o out/
    """
    from compress.api import prune_config, pruning_data
    from compress.model import load, resolve_checkpoint
    from compress.passes.quantize import QuantizeConfig
    from compress.pipeline import apply, default_output_dir

    cfg = prune_config(
        pattern,
        sparsity,
        method=method,
        scope=scope,
        round_to=round_to,
        embeddings=embeddings,
        include=include,
        exclude=exclude,
    )
    recipe = [cfg] + ([QuantizeConfig.from_dict({"scheme": then_quantize})] if then_quantize else [])
    out = output or str(default_output_dir(source, "pruned"))
    progress = make_progress(quiet)
    model = load(resolve_checkpoint(source), progress=progress)
    data = pruning_data(model, cfg, calib, calib_samples, calib_seq_len)
    artifact = apply(model, recipe, data=data, progress=progress)
    artifact.save(out)
    if not quiet:
        then = f", then {then_quantize}" if then_quantize else ""
        stderr.print(
            f"wrote [bold]{artifact.path}[/] ({cfg.describe()}{then}, {len(artifact.changes)} tensors)"
        )
    if no_eval:
        return
    report = evaluate_from_options(
        artifact.path, source, eval_opts, progress, inputs=sample_batch(model, data, eval_opts)
    )
    emit_report(report, json_path, quiet)


def sample_batch(model, data, opts: dict):
    """For a model without a tokenizer: a batch of the calibration inputs, to time and compare on."""
    import torch

    from compress.passes.prune.activations import sample_list

    samples = [s for s in sample_list(data) if isinstance(s, torch.Tensor)]
    if model.tokenizer is not None or not samples:
        return None
    return torch.cat(samples[: opts["batch_size"]])
