"""evaluate(): baseline beside candidate: size, accuracy retention, latency per device and runtime."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from compress.errors import BadInput
from compress.eval.environment import environment
from compress.eval.latency import LatencySettings
from compress.eval.runtimes import OnnxGraphs, budget_notes, check_choices, latency_row
from compress.eval.size import size_section, tensor_errors
from compress.eval.structure import annotate_latency, structure_sections
from compress.eval.tasks import AccuracyResult, Task, TaskOptions, pick_task
from compress.model import Model, load
from compress.onnx.samples import export_samples
from compress.progress import resolve as resolve_progress

if TYPE_CHECKING:
    from compress.report import Report

RUNTIMES = ("torch",)  # the default; "onnxruntime" and "openvino" export both models first
DEVICES = ("cpu", "cuda")


def evaluate(
    candidate: Any,
    baseline: Any,
    *,
    task: str | Task = "auto",
    data: str | None = None,
    limit: int | None = None,
    runtimes: Sequence[str] = RUNTIMES,
    devices: Sequence[str] = DEVICES,
    latency: LatencySettings | None = None,
    inputs: Any = None,
    task_options: TaskOptions | dict | None = None,
    progress=None,
    history: Any = "default",
) -> Report:
    """Compare a candidate with its baseline and return a Report.

    `candidate` and `baseline` are paths, `Model`s, `torch.nn.Module`s or an `Artifact`.
    `inputs` are sample inputs for models without a tokenizer (latency and fidelity); without them,
    such a model is timed on the first rows of an .npz `data` file.
    `runtimes`: "torch", "onnxruntime" (both models exported to ONNX and checked against torch
    first) and/or "openvino" (see compress.eval.openvino; the accuracy task is also scored through
    OpenVINO, in accuracy.details.by_runtime.openvino); `devices`: "cpu" and/or "cuda". An absent
    one gives an 'unavailable' row.
    `task_options` (a TaskOptions or a dict of its fields): text length, causal-lm window and stride.
    `task`: auto, classification, embedding, causal-lm, fidelity, or a Task from eval.tasks.pick_task.
    `progress`: True for plain text progress (fine in a notebook), or a compress.progress.Progress.
    `history`: the compress.history.History the report is appended to, as the CLI does: "default"
    (COMPRESS_HISTORY or .compress/history.db), or None to keep no record.

    Example:
        >>> import compress as cz
        >>> report = cz.evaluate("out/int8", baseline="model.safetensors")   # doctest: +SKIP
        >>> report.metric("accuracy.retention")                               # doctest: +SKIP
        0.999
    """
    from compress.report import Report  # here, not at the top: report.py imports this package

    check_choices(devices, runtimes)
    progress = resolve_progress(progress)
    options = task_options if isinstance(task_options, TaskOptions) else TaskOptions.from_dict(task_options)
    cand = _as_model(candidate, progress)
    base = _as_model(baseline, progress)
    check_compatible(cand, base)
    notes: list[str] = list(cand.notes)
    notes += _source_check(cand, base)
    notes += _compression_notes(cand)
    settings = latency or LatencySettings()
    if inputs is None and base.tokenizer is None:
        inputs = _data_inputs(data, settings.batch_size)

    both = cand.checkpoint and base.checkpoint and not (cand.onnx_only or base.onnx_only)
    tensors = tensor_errors(cand.checkpoint, base.checkpoint) if both else []
    chosen, accuracy, why = _accuracy(cand, base, task, data, inputs, limit, options, progress)
    notes.append(why)

    rows, latency_notes = _latency_rows(
        cand, base, devices, runtimes, settings, inputs, progress, accuracy, chosen
    )
    notes += latency_notes
    notes += budget_notes(rows, settings)
    sparsity, compute = structure_sections(cand, base, settings, inputs)
    notes += annotate_latency(rows, compute, sparsity)
    report = Report(
        candidate=describe(cand, getattr(candidate, "recipe", None)),
        baseline=describe(base),
        size=size_section(cand, base),
        accuracy=accuracy,
        latency=rows,
        tensors=tensors,
        sparsity=sparsity,
        compute=compute,
        environment=environment(settings.threads),
        notes=notes,
    )
    _record(report, history)
    return report


def _accuracy(cand, base, task, data, inputs, limit, options, progress):
    """(the task run, its result, why it was picked): a Task given by the caller (a sweep picks one
    and reuses its baseline work), or the one `task` names or auto picks."""
    if isinstance(task, Task):
        chosen, why = task, f"task '{task.name}' as given"
    else:
        chosen, why = pick_task(base, task, data, inputs=inputs, limit=limit, options=options)
    if chosen is None:
        return None, AccuracyResult.unavailable(why), why
    return chosen, chosen.run(base, cand, progress=progress), why


def _latency_rows(
    cand, base, devices, runtimes, settings, inputs, progress, accuracy, task
) -> tuple[list[dict], list[str]]:
    """One latency row per device and runtime (each model's ONNX graph exported once for all); with
    the openvino runtime, the accuracy is also scored through OpenVINO (accuracy.details.by_runtime)."""
    graphs = OnnxGraphs(export_samples(inputs))
    try:
        if "openvino" in runtimes and task is not None and accuracy.status == "ok":
            from compress.eval.openvino import accuracy_through

            through = accuracy_through(task, base, cand, graphs, devices, settings.threads, progress)
            accuracy.details["by_runtime"] = {"openvino": through}
        rows = [
            latency_row(cand, base, device, runtime, settings, inputs, graphs, progress)
            for device in devices
            for runtime in runtimes
        ]
    finally:
        graphs.close()
    return rows, graphs.notes


def _data_inputs(data: str | None, batch_size: int) -> Any:
    """The first rows of an .npz evaluation file: what a model without a tokenizer is timed on."""
    if data is None or not str(data).endswith(".npz"):
        return None
    from compress.eval.data import load_arrays

    return load_arrays(data, limit=batch_size)[0]


def _record(report: Report, history: Any) -> None:
    if history is None or history is False:
        return
    if history == "default":
        from compress.history import History

        history = History()
    history.append(report, command="evaluate")


def _as_model(source: Any, progress) -> Model:
    from compress.artifact import Artifact

    if isinstance(source, Artifact):
        return load(source.path, progress=progress) if source.path else source.model
    return load(source, progress=progress)


def describe(model: Model, recipe: list[dict] | None = None) -> dict:
    """Who a model is; `recipe` for an in-memory Artifact, whose model has no file that records it."""
    info = model.compression
    return {
        "name": model.name,
        "path": str(model.checkpoint) if model.checkpoint else None,
        "family": model.family,
        "architecture": (getattr(model.config, "architectures", None) or [None])[0] if model.config else None,
        "recipe": info.recipe if info else (recipe or []),
        "source_sha256": info.source_sha256 if info else None,
        "stats": info.stats if info else {},
        **({"backend": model.backend} if model.backend else {}),
        **({"state_sha256": state_sha256(model.module)} if model.checkpoint is None and model.module else {}),
    }


def state_sha256(module) -> str:
    """A model built in code has no file to hash: the hash of its tensors (names, dtypes, shapes,
    values) keys it in the history instead."""
    import hashlib

    from compress.checkpoint import tensor_bytes

    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor_bytes(tensor))
    return digest.hexdigest()


def check_compatible(cand: Model, base: Model) -> None:
    if cand.runnable != base.runnable:
        raise BadInput(
            "baseline and candidate differ: one has an architecture (config.json) and the other not."
        )
    if cand.config is not None and base.config is not None:
        a, b = cand.config.model_type, base.config.model_type
        if a != b:
            raise BadInput(f"baseline is a '{b}' model and candidate a '{a}' model; compare like with like.")
        arch_a, arch_b = (describe(m)["architecture"] for m in (cand, base))
        if arch_a != arch_b:
            raise BadInput(
                f"baseline is a {arch_b} and candidate a {arch_a}; their outputs are not comparable."
            )
    elif cand.family == base.family == "module" and type(cand.module) is not type(base.module):
        raise BadInput(
            f"baseline is a {type(base.module).__name__} and candidate a {type(cand.module).__name__}; "
            "compare like with like."
        )


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
