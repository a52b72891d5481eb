"""`compress quantize`: one quantize pass on a checkpoint, then the evaluation against it."""

from __future__ import annotations

import click

from compress.cli.common import (
    emit_report,
    eval_options,
    evaluate_from_options,
    handle_errors,
    json_option,
    make_progress,
    open_history,
    quiet_option,
    stderr,
)


@click.command()
@click.argument("source", type=click.Path(path_type=str))
@click.option(
    "-o", "--output", metavar="DIR", help="Output folder (default: <input folder>-<scheme> beside it)."
)
@click.option(
    "--scheme",
    type=click.Choice(["int8", "int4"]),
    default="int8",
    show_default=True,
    help="int8: per output channel, symmetric. int4: group-wise.",
)
@click.option(
    "--group-size", type=int, default=128, show_default=True, help="INT4 group size (power of two)."
)
@click.option("--asymmetric", is_flag=True, help="INT4 with a stored zero point per group.")
@click.option(
    "--method",
    type=click.Choice(["rtn", "mse", "hqq", "gptq", "awq"]),
    default="rtn",
    show_default=True,
    help="How INT4 codes are chosen. No data: rtn (round to nearest), mse (MSE-optimal clipping), "
    "hqq (HQQ-style refinement). Calibration data: gptq, awq.",
)
@click.option(
    "--calib",
    metavar="PATH|NAME",
    help="Calibration data for gptq/awq: .txt, .jsonl/.csv (text column), .npz, or a built-in text "
    "[default: wiki-train].",
)
@click.option("--calib-samples", type=int, metavar="N", help="Calibration samples [default: 128].")
@click.option("--calib-seq-len", type=int, metavar="N", help="Tokens per calibration sample [default: 512].")
@click.option("--calib-seed", type=int, metavar="N", help="Seed that picks the samples [default: 0].")
@click.option(
    "--damp", type=float, help="gptq: Hessian damping, fraction of its mean diagonal [default: 0.01]."
)
@click.option(
    "--act-order/--no-act-order", default=None, help="gptq: busiest input columns first [default: on]."
)
@click.option(
    "--clip/--no-clip", default=None, help="gptq/awq: search each group's clipping range [default: on]."
)
@click.option(
    "--keep-int8",
    multiple=True,
    metavar="GLOB",
    help="Mixed precision: layers whose name matches stay at INT8 in an INT4 run (repeatable).",
)
@click.option(
    "--activations",
    type=click.Choice(["none", "dynamic", "static"]),
    default="none",
    show_default=True,
    help="int8: also quantize activations, per token at run time (dynamic) or with ranges calibrated "
    "on --calib data (static), in the ONNX export's integer kernels.",
)
@click.option(
    "--smooth",
    type=float,
    metavar="ALPHA",
    help="int8 with activations: SmoothQuant strength (0-1; 0: off), calibrated on --calib data "
    "[default: 0.5 with static activations, off with dynamic].",
)
@click.option(
    "--onnx-format",
    type=click.Choice(["qoperator", "qdq"]),
    default="qoperator",
    show_default=True,
    help="Static INT8 in the ONNX export: integer operators, or QuantizeLinear/DequantizeLinear pairs.",
)
@click.option(
    "--weight-bits",
    type=click.Choice(["8", "7"]),
    help="int8 code range (default: 7 with dynamic activations, so ONNX Runtime's AVX2 kernel cannot "
    "saturate; else 8).",
)
@click.option(
    "--export",
    "export_format",
    type=click.Choice(["onnx"]),
    help="Also write model.onnx with integer kernels (INT8: MatMulIntegerToFloat, INT4: MatMulNBits).",
)
@click.option(
    "--embeddings", is_flag=True, help="Quantize embedding tables too (Linear layers only by default)."
)
@click.option("--include", multiple=True, metavar="GLOB", help="Only layers whose name matches (repeatable).")
@click.option(
    "--exclude",
    multiple=True,
    metavar="GLOB",
    help="Keep layers whose name matches in float (repeatable).",
)
@click.option(
    "--backend",
    type=click.Choice(["compress", "nncf"]),
    default="compress",
    show_default=True,
    help="Who quantizes: compress, or NNCF on the model's ONNX export (int8: NNCF's static PTQ on "
    "calibration texts; int4: its weight compression). The result is model.onnx; it is evaluated "
    "on onnxruntime.",
)
@click.option("--no-eval", is_flag=True, help="Write the checkpoint and stop; no evaluation.")
@eval_options
@json_option
@quiet_option
@handle_errors
def quantize(
    source: str,
    output: str | None,
    scheme: str,
    group_size: int,
    asymmetric: bool,
    method: str,
    calib: str | None,
    calib_samples: int | None,
    calib_seq_len: int | None,
    calib_seed: int | None,
    damp: float | None,
    act_order: bool | None,
    clip: bool | None,
    keep_int8: tuple[str, ...],
    activations: str,
    smooth: float | None,
    onnx_format: str,
    weight_bits: str | None,
    export_format: str | None,
    embeddings: bool,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    backend: str,
    no_eval: bool,
    json_path: str | None,
    quiet: bool,
    **eval_opts,
) -> None:
    """Quantize the weights of SOURCE (a .safetensors file or its folder) and evaluate the result.

    \b
    compress quantize model.safetensors                     # INT8, Linear layers
    compress quantize model.safetensors --embeddings        # INT8, embeddings too
    compress quantize model.safetensors --scheme int4 --group-size 32 -o out/ --json report.json
    compress quantize gemma/ --scheme int4 --method gptq --calib wiki.txt --calib-samples 64
    compress quantize gemma/ --scheme int4 --method awq --keep-int8 'model.layers.0.*'
    compress quantize model.safetensors --scheme int4 --method hqq    # no data needed
    compress quantize model.safetensors --activations dynamic --export onnx -o out/   # faster on CPU
    compress quantize model.safetensors --activations static --calib calib.txt --export onnx -o out/
    compress quantize model.safetensors --backend nncf -o out/   # NNCF's static INT8, for comparison
    """
    from compress.api import quantize_config
    from compress.pipeline import compress_checkpoint, default_output_dir

    calibration = {
        key: value
        for key, value in {
            "source": calib,
            "samples": calib_samples,
            "seq_len": calib_seq_len,
            "seed": calib_seed,
        }.items()
        if value is not None
    }
    method_settings = {
        key: value
        for key, value in {"damp": damp, "act_order": act_order, "clip": clip, "smooth": smooth}.items()
        if value is not None
    }
    cfg = quantize_config(
        scheme,
        group_size=group_size,
        symmetric=not asymmetric,
        method=method,
        activations=activations,
        weight_bits=int(weight_bits) if weight_bits else None,
        embeddings=embeddings,
        include=include or ("*",),
        exclude=exclude,
        keep_int8=keep_int8,
        calib=calibration,
        backend=backend,
        **method_settings,
    )
    label = scheme if method == "rtn" else f"{scheme}-{method}"
    out = output or str(default_output_dir(source, label if backend == "compress" else f"{backend}-{label}"))
    if backend != "compress" and click.get_current_context().get_parameter_source("runtimes") in (
        click.core.ParameterSource.DEFAULT,
        None,
    ):
        eval_opts["runtimes"] = "onnxruntime"  # an ONNX-only result has no torch module to time
    if not no_eval:
        open_history(eval_opts, check=True)
    progress = make_progress(quiet)
    if export_format and backend == "compress":
        artifact = compress_and_export(source, cfg, out, progress, onnx_format)
    else:
        artifact = compress_checkpoint(source, cfg, out, progress=progress)
    if not quiet and backend != "compress":
        stderr.print(f"wrote [bold]{artifact.path}[/] ({cfg.describe()})")
    elif not quiet:
        stderr.print(f"wrote [bold]{artifact.path}[/] ({cfg.describe()}, {len(artifact.changes)} weights)")
        if export_format:
            stderr.print(f"wrote [bold]{artifact.path.parent / 'model.onnx'}[/] (integer kernels)")
    if no_eval:
        return
    report = evaluate_from_options(artifact.path, source, eval_opts, progress)
    emit_report(report, json_path, quiet, eval_opts["markdown_path"])


def compress_and_export(source: str, cfg, out: str, progress, form: str = "qoperator"):
    """The checkpoint and its integer ONNX graph, written together: a failed export leaves neither."""
    from pathlib import Path

    from compress.checkpoint import atomic_output_dir
    from compress.errors import BadInput
    from compress.onnx.integer import export_quantized_folder
    from compress.pipeline import compress_checkpoint

    if cfg.scheme == "int8" and cfg.activations == "none":
        raise BadInput(
            "--export onnx with int8 needs --activations dynamic or static: weight-only INT8 has no "
            "ONNX Runtime kernel faster than float."
        )
    with atomic_output_dir(Path(out)) as stage:
        artifact = compress_checkpoint(source, cfg, stage, progress=progress)
        if progress:
            progress.start("exporting to ONNX with integer kernels", total=None)
        export_quantized_folder(stage, cfg.activations, form=form)
        if progress:
            progress.done()
    artifact.path = Path(out) / artifact.path.name
    return artifact
