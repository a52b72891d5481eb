"""`compress quantize`: a one-pass quantize recipe on a checkpoint, run like any recipe.

The options are the settings of the quantize method's class (compress.passes.quantize.config); an
option left out takes that class's default, which its help shows, so the command and the API
cannot drift apart (a test checks every option against the classes).
"""

from __future__ import annotations

import click

from compress.cli.common import eval_options, evaluation_from_options, handle_errors
from compress.cli.execute import execute, run_options
from compress.exporters import available_formats
from compress.passes.quantize.config import (
    BACKENDS,
    METHODS,
    SCHEMES,
    AwqConfig,
    GptqConfig,
    Int4Config,
    Int8Config,
)
from compress.target import TARGETS

# Command-line option -> setting of the method's class; `None` options are left to the class.
SETTING_OPTIONS = (
    "group_size",
    "symmetric",
    "activations",
    "smooth",
    "weight_bits",
    "keep_int8",
    "damp",
    "act_order",
    "clip",
    "backend",
    "allow_nonfinite",
)


@click.command()
@click.argument("source", type=click.Path(path_type=str))
@click.option(
    "--scheme",
    type=click.Choice(SCHEMES),
    default="int8",
    show_default=True,
    help="int8: per output channel, symmetric. int4: group-wise.",
)
@click.option(
    "--method",
    type=click.Choice(METHODS),
    default="rtn",
    show_default=True,
    help="How INT4 codes are chosen. No data: rtn (round to nearest), mse (MSE-optimal clipping), "
    "hqq (HQQ-style refinement). Calibration data: gptq, awq.",
)
@click.option(
    "--group-size", type=int, help=f"INT4 group size, a power of two [default: {Int4Config.group_size}]."
)
@click.option(
    "--asymmetric",
    "symmetric",
    flag_value=False,
    default=None,
    help="INT4 with a stored zero point per group [default: symmetric].",
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
    help="int8: also quantize activations, per token at run time (dynamic) or with ranges calibrated "
    f"on --calib data (static), in the ONNX export's integer kernels [default: {Int8Config.activations}].",
)
@click.option(
    "--smooth",
    type=float,
    metavar="ALPHA",
    help="int8 with activations: SmoothQuant strength (0-1; 0: off), calibrated on --calib data "
    "[default: 0.5 with static activations, off with dynamic].",
)
@click.option(
    "--weight-bits",
    type=click.Choice(["8", "7"]),
    help="int8 code range [default: 7 with quantized activations, so ONNX Runtime's AVX2 kernel "
    "cannot saturate; else 8].",
)
@click.option(
    "--damp",
    type=float,
    help=f"gptq: Hessian damping, fraction of its mean diagonal [default: {GptqConfig.damp}].",
)
@click.option(
    "--act-order/--no-act-order",
    default=None,
    help=f"gptq: busiest input columns first [default: {'on' if GptqConfig.act_order else 'off'}].",
)
@click.option(
    "--clip/--no-clip",
    default=None,
    help=f"gptq/awq: search each group's clipping range [default: {'on' if AwqConfig.clip else 'off'}].",
)
@click.option(
    "--calib",
    metavar="PATH|NAME",
    help="Calibration data for gptq, awq, static activations, smoothing and NNCF: .txt, .jsonl/.csv "
    "(text column), .npz, or a built-in text [default: wiki-train].",
)
@click.option("--calib-samples", type=int, metavar="N", help="Calibration samples [default: 128].")
@click.option("--calib-seq-len", type=int, metavar="N", help="Tokens per calibration sample [default: 512].")
@click.option("--calib-seed", type=int, metavar="N", help="Seed that picks the samples [default: 0].")
@click.option(
    "--allow-nonfinite",
    flag_value=True,
    default=None,
    help="Quantize weights holding NaN or Inf (NaN as 0, Inf as the row's largest finite value) instead of "
    "refusing them [default: off: refused].",
)
@click.option(
    "--embeddings", is_flag=True, help="Quantize embedding tables too (Linear layers only by default)."
)
@click.option("--include", multiple=True, metavar="GLOB", help="Only layers whose name matches (repeatable).")
@click.option(
    "--exclude", multiple=True, metavar="GLOB", help="Keep layers whose name matches in float (repeatable)."
)
@click.option(
    "--export",
    "export_formats",
    multiple=True,
    type=click.Choice(available_formats()),
    help="Also write the model for a runtime (repeatable): onnx (model.onnx with integer kernels), "
    "openvino (openvino/ IR), compressed-tensors (compressed-tensors/ for transformers and vLLM).",
)
@click.option(
    "--onnx-format",
    type=click.Choice(["qoperator", "qdq"]),
    help="Static INT8 in the ONNX export: integer operators (qoperator, the default), or "
    "QuantizeLinear/DequantizeLinear pairs (qdq).",
)
@click.option(
    "--backend",
    type=click.Choice(BACKENDS),
    help="Who quantizes: compress (the default), or NNCF on the model's ONNX export (int8: NNCF's "
    "static PTQ on calibration texts; int4: its weight compression); the result is model.onnx, "
    "evaluated on onnxruntime.",
)
@click.option(
    "--target",
    type=click.Choice(TARGETS),
    envvar="COMPRESS_TARGET",
    default="auto",
    show_default=True,
    help="auto: when you choose no scheme, activations, method, backend, weight bits or export, take what "
    "is fastest on this machine (`compress hardware` shows it): the quantization, the export and the "
    "runtime timed; the report says what was picked and why. none: INT8 weight-only unless you choose "
    "[env: COMPRESS_TARGET].",
)
@run_options
@eval_options
@handle_errors
def quantize(source: str, **opts) -> None:
    """Quantize the weights of SOURCE (a .safetensors file or its folder) and evaluate the result.

    \b
    compress quantize model.safetensors                     # INT8, Linear layers
    compress quantize model.safetensors --embeddings        # INT8, embeddings too
    compress quantize model.safetensors --scheme int4 --group-size 32 -o out/ --json report.json
    compress quantize gemma/ --scheme int4 --method gptq --calib wiki.txt --calib-samples 64
    compress quantize gemma/ --scheme int4 --method awq --keep-int8 'model.layers.0.*'
    compress quantize model.safetensors --activations dynamic --export onnx -o out/   # faster on CPU
    compress quantize model.safetensors --activations static --calib calib.txt --export onnx -o out/
    compress quantize model.safetensors --backend nncf -o out/   # NNCF's static INT8, for comparison
    compress quantize model.safetensors --scheme int4 --save-recipe int4.yaml --dry-run
    """
    from compress.api import export_steps, quantize_recipe, with_calibration

    description = _apply_target(source, opts) if opts["target"] == "auto" else ""
    if opts["onnx_format"] and "onnx" not in opts["export_formats"]:
        raise click.UsageError("--onnx-format applies to the ONNX export: add --export onnx.")
    if opts["backend"] == "nncf" and click.get_current_context().get_parameter_source("runtimes") in (
        click.core.ParameterSource.DEFAULT,
        None,
    ):
        opts["runtimes"] = "onnxruntime"  # an ONNX-only result has no torch module to time
    settings = {name: opts[name] for name in SETTING_OPTIONS}
    settings["weight_bits"] = int(opts["weight_bits"]) if opts["weight_bits"] else None
    settings["keep_int8"] = opts["keep_int8"] or None
    recipe = quantize_recipe(
        opts["scheme"],
        method=opts["method"],
        embeddings=opts["embeddings"],
        include=opts["include"] or ("*",),
        exclude=opts["exclude"],
        **settings,
    )
    calibration = {
        k: opts[f"calib_{k}"] for k in ("samples", "seq_len", "seed") if opts[f"calib_{k}"] is not None
    }
    recipe = with_calibration(recipe, opts["calib"], calibration)
    exports = [
        {
            "format": f,
            **({"quant_format": opts["onnx_format"]} if f == "onnx" and opts["onnx_format"] else {}),
        }
        for f in opts["export_formats"]
    ]
    name = f"{opts['backend']}-{recipe.name}" if opts["backend"] == "nncf" else recipe.name
    evaluation = evaluation_from_options(opts)
    recipe = recipe.replace(
        export=export_steps(exports), evaluation=evaluation, name=name, description=description
    )
    execute(recipe, source, opts, command="quantize", describe=recipe.passes[0].describe())


# Options that say how to quantize: any of them on the command line and --target auto stands aside.
CHOICES = ("scheme", "method", "activations", "smooth", "backend", "weight_bits", "export_formats")


def _apply_target(source: str, opts: dict) -> str:
    """Fill the options the user left to --target auto from compress.target; the reason, or ''."""
    from compress.target import auto_target

    ctx = click.get_current_context()
    given = click.core.ParameterSource.COMMANDLINE, click.core.ParameterSource.ENVIRONMENT
    if any(ctx.get_parameter_source(name) in given for name in CHOICES):
        return ""
    target = auto_target(source, has_module=bool(opts.get("module")), calibration=opts["calib"])
    opts["scheme"] = target.settings["scheme"]
    opts["activations"] = target.settings.get("activations")
    bits = target.settings.get("weight_bits")
    opts["weight_bits"] = str(bits) if bits else None
    opts["embeddings"] = opts["embeddings"] or target.embeddings
    opts["export_formats"] = tuple(target.exports)
    if ctx.get_parameter_source("runtimes") not in given:
        opts["runtimes"] = target.runtime  # the headline latency row is the chosen runtime's
    return target.reason
