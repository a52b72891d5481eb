"""evaluate(): baseline beside candidate: size, accuracy retention, latency per device and runtime."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from compress.errors import BadInput
from compress.eval.calls import batch_size_of, call_module, move_inputs
from compress.eval.environment import environment
from compress.eval.latency import LatencySettings, cpu_timer, cuda_timer, measure_pair
from compress.eval.size import size_section, tensor_errors
from compress.eval.tasks import AccuracyResult, pick_task
from compress.eval.text import latency_inputs
from compress.model import Model, load
from compress.report import Report

RUNTIMES = ("torch",)
DEVICES = ("cpu", "cuda")


def evaluate(
    candidate: Any,
    baseline: Any,
    *,
    task: str = "auto",
    data: str | None = None,
    limit: int | None = None,
    runtimes: Sequence[str] = RUNTIMES,
    devices: Sequence[str] = DEVICES,
    latency: LatencySettings | None = None,
    inputs: Any = None,
    progress=None,
) -> Report:
    """Compare a candidate with its baseline and return a Report.

    `candidate` and `baseline` are paths, `Model`s, `torch.nn.Module`s or an `Artifact`.
    `inputs` are sample inputs for models without a tokenizer (latency and fidelity).

    Example:
        >>> import compress as cz
        >>> report = cz.evaluate("out/int8", baseline="model.safetensors")   # doctest: +SKIP
        >>> report.metric("accuracy.retention")                               # doctest: +SKIP
        0.999
    """
    cand = _as_model(candidate, progress)
    base = _as_model(baseline, progress)
    check_compatible(cand, base)
    notes: list[str] = list(cand.notes)
    notes += _source_check(cand, base)
    notes += _compression_notes(cand)
    settings = latency or LatencySettings()

    tensors = tensor_errors(cand.checkpoint, base.checkpoint) if cand.checkpoint and base.checkpoint else []
    chosen, why = pick_task(base, task, data, inputs=inputs, limit=limit)
    notes.append(why)
    if chosen is None:
        accuracy = AccuracyResult.unavailable(why)
    else:
        accuracy = chosen.run(base, cand, progress=progress)

    rows = [
        latency_row(cand, base, device, runtime, settings, inputs, progress)
        for device in devices
        for runtime in runtimes
    ]
    return Report(
        candidate=describe(cand),
        baseline=describe(base),
        size=size_section(cand, base),
        accuracy=accuracy,
        latency=rows,
        tensors=tensors,
        environment=environment(settings.threads),
        notes=notes,
    )


def _as_model(source: Any, progress) -> Model:
    from compress.artifact import Artifact

    if isinstance(source, Artifact):
        return load(source.path, progress=progress) if source.path else source.model
    return load(source, progress=progress)


def describe(model: Model) -> dict:
    info = model.compression
    return {
        "name": model.name,
        "path": str(model.checkpoint) if model.checkpoint else None,
        "family": model.family,
        "architecture": (getattr(model.config, "architectures", None) or [None])[0] if model.config else None,
        "recipe": info.recipe if info else [],
        "source_sha256": info.source_sha256 if info else None,
        "stats": info.stats if info else {},
    }


def check_compatible(cand: Model, base: Model) -> None:
    if cand.runnable != base.runnable:
        raise BadInput(
            "baseline and candidate differ: one has an architecture (config.json) and the other not."
        )
    if cand.config is not None and base.config is not None:
        a, b = cand.config.model_type, base.config.model_type
        if a != b:
            raise BadInput(f"baseline is a '{b}' model and candidate a '{a}' model; compare like with like.")


def _source_check(cand: Model, base: Model) -> list[str]:
    from compress.checkpoint import sha256_file

    if not (cand.compression and cand.compression.source_sha256 and base.checkpoint):
        return []
    if sha256_file(base.checkpoint) != cand.compression.source_sha256:
        return ["the baseline is not the checkpoint this candidate was made from (sha256 differs)"]
    return []


def _compression_notes(model: Model) -> list[str]:
    """What the checkpoint's header says about how it was made (time, memory, caveats)."""
    info = model.compression
    if info is None:
        return []
    notes = []
    seconds, peak = info.stats.get("quantize.seconds"), info.stats.get("quantize.peak_rss_mb")
    if seconds is not None:
        memory = f", peak RSS {peak / 1000:.2f} GB" if peak else ""
        notes.append(f"quantization took {seconds:.0f} s{memory} (recorded in the checkpoint)")
    if any(step.get("method") == "awq" for step in info.recipe):
        notes.append(
            "awq folds its scales into the layers before the quantized ones: per-tensor SQNR against "
            "the baseline includes that exact rescaling, not only the quantization error"
        )
    return notes


def unavailable_row(device: str, runtime: str, reason: str) -> dict:
    return {"device": device, "runtime": runtime, "status": "unavailable", "reason": reason}


def latency_row(
    cand: Model, base: Model, device: str, runtime: str, settings: LatencySettings, inputs: Any, progress
) -> dict:
    import torch

    if not (cand.runnable and base.runnable):
        return unavailable_row(device, runtime, "no architecture (config.json) beside the checkpoint")
    if runtime != "torch":
        return unavailable_row(device, runtime, f"runtime '{runtime}' is not supported yet")
    if device == "cuda" and not torch.cuda.is_available():
        return unavailable_row(device, runtime, "no CUDA device (torch.cuda.is_available() is False)")
    if device not in ("cpu", "cuda"):
        raise BadInput(f"unknown device '{device}'; valid: cpu, cuda.")
    if inputs is None:
        if base.tokenizer is None:
            return unavailable_row(device, runtime, "needs sample inputs for a model without a tokenizer")
        batch = latency_inputs(base, settings.batch_size, settings.seq_len)
        shape = {"batch_size": settings.batch_size, "seq_len": settings.seq_len}
    else:
        batch = inputs
        shape = {"batch_size": batch_size_of(inputs), "seq_len": None}
    previous_threads = torch.get_num_threads()
    if settings.threads:
        torch.set_num_threads(settings.threads)
    try:
        run_b, run_c = (_torch_call(m.module, batch, device) for m in (base, cand))
        pair = measure_pair(run_b, run_c, settings, cuda_timer if device == "cuda" else cpu_timer, progress)
    finally:
        torch.set_num_threads(previous_threads)
        if device != "cpu":
            base.module.to("cpu")
            cand.module.to("cpu")
    items = shape["batch_size"] or 1
    return {
        "device": device,
        "runtime": runtime,
        "status": "ok",
        "reason": None,
        **shape,
        "threads": torch.get_num_threads() if not settings.threads else settings.threads,
        "p50_ms": pair.candidate.p50,
        "p90_ms": pair.candidate.p90,
        "iqr_ms": pair.candidate.iqr,
        "baseline_p50_ms": pair.baseline.p50,
        "baseline_p90_ms": pair.baseline.p90,
        "baseline_iqr_ms": pair.baseline.iqr,
        "speedup": pair.speedup,
        "speedup_ci": list(pair.speedup_ci),
        "throughput": items * 1e3 / pair.candidate.p50,
        "baseline_throughput": items * 1e3 / pair.baseline.p50,
        "rounds": pair.rounds,
    }


def _torch_call(module, batch: Any, device: str):
    import torch

    module.to(device)
    moved = move_inputs(batch, device)

    def run():
        with torch.inference_mode():
            return call_module(module, moved)

    return run
