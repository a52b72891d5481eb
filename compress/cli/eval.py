"""`compress eval`: compare a candidate checkpoint with its baseline."""

from __future__ import annotations

import click

from compress.cli.common import (
    emit_report,
    eval_options,
    evaluate_from_options,
    handle_errors,
    json_option,
    make_progress,
    model_spec,
    quiet_option,
    with_module_options,
)


@click.command(name="eval")
@click.argument("candidate", type=click.Path(path_type=str))
@click.option(
    "--baseline",
    required=True,
    type=click.Path(path_type=str),
    help="The checkpoint the candidate is compared with.",
)
@eval_options
@with_module_options
@json_option
@quiet_option
@handle_errors
def eval_command(candidate: str, baseline: str, json_path: str | None, quiet: bool, **eval_opts) -> None:
    """Evaluate CANDIDATE against BASELINE: size, accuracy retention, latency.

    \b
    compress eval out/model.safetensors --baseline model.safetensors --json report.json
    compress eval out/ --baseline model/ --task classification --data test.jsonl \\
        --runtime torch,onnxruntime --device cpu,cuda --json r.json --markdown r.md
    compress eval out/ --baseline cnn/model.safetensors --module cnn.py:DigitsCNN --data digits.npz

    With --module, both checkpoints are loaded into that class (the candidate, pruned or quantized,
    into a fresh instance of the same class).
    """
    progress = make_progress(quiet)
    spec = model_spec(eval_opts)
    if spec is not None:
        candidate, baseline = spec.load(candidate, progress=progress), spec.load(baseline, progress=progress)
    report = evaluate_from_options(candidate, baseline, eval_opts, progress)
    emit_report(report, json_path, quiet, eval_opts["markdown_path"])
