"""Latency rows: baseline and candidate on one device and runtime (torch eager, ONNX Runtime or
OpenVINO, see compress.eval.openvino), timed interleaved, with the peak memory of a call of each.

A runtime or device that is not there, or a model that does not export to ONNX or whose export
does not agree with torch, gives a row with status 'unavailable' and the reason, never a crash.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from compress.errors import BadInput, CompressError, Unavailable
from compress.eval.calls import batch_size_of, call_module, move_inputs
from compress.eval.latency import LatencySettings, Runner, cpu_timer, cuda_timer, measure_pair
from compress.eval.memory import cuda_during, rss_during
from compress.eval.text import latency_inputs
from compress.model import Model

RUNTIMES = ("torch", "onnxruntime", "openvino")
DEVICES = ("cpu", "cuda")
# Texts of different lengths: exporting with padding keeps the mask in the traced graph.


def check_choices(devices, runtimes) -> None:
    for device in devices:
        if device not in DEVICES:
            raise BadInput(f"unknown device '{device}'; valid: {', '.join(DEVICES)}.")
    for runtime in runtimes:
        if runtime not in RUNTIMES:
            raise BadInput(f"unknown runtime '{runtime}'; valid: {', '.join(RUNTIMES)}.")


def unavailable_row(device: str, runtime: str, reason: str) -> dict:
    return {"device": device, "runtime": runtime, "status": "unavailable", "reason": reason}


def torch_runner(model: Model, batch: Any, device: str, _settings: LatencySettings, _onnx) -> Runner:
    import torch

    if model.onnx_only:
        raise Unavailable(
            "exists only as an ONNX graph (made by a backend), so there is no torch module to time; "
            "see the onnxruntime row (--runtime onnxruntime)"
        )
    module = model.module.to(device)
    moved = move_inputs(batch, device)

    def run():
        with torch.inference_mode():
            return call_module(module, moved)

    return Runner(run, close=lambda: model.module.to("cpu"))


def onnx_runner(model: Model, batch: Any, device: str, settings: LatencySettings, onnx) -> Runner:
    import torch

    from compress.onnx import named_inputs, open_session, session_feeds

    graph, check = onnx.get(model)
    session = open_session(graph.path, device, settings.threads or torch.get_num_threads())
    feeds = session_feeds(session, named_inputs(batch)[0])
    return Runner(lambda: session.run(None, feeds), info={"onnx": {**graph.describe(), **check.describe()}})


def openvino_runner(model: Model, batch: Any, device: str, settings: LatencySettings, graphs) -> Runner:
    from compress.eval.openvino import openvino_runner as runner

    return runner(model, batch, device, settings, graphs)


RUNNERS = {"torch": torch_runner, "onnxruntime": onnx_runner, "openvino": openvino_runner}


def device_available(device: str, runtime: str) -> None:
    """Raise Unavailable with the reason when `runtime` cannot run on `device` here."""
    import torch

    if runtime == "onnxruntime":
        from compress.onnx import provider_for

        provider_for(device)
    elif runtime == "openvino":
        from compress.openvino import check_device

        check_device(device)
    elif device == "cuda" and not torch.cuda.is_available():
        raise Unavailable("no CUDA device (torch.cuda.is_available() is False)")


class OnnxGraphs:
    """Each model's ONNX graph, exported (or found beside its checkpoint) and checked once per evaluation."""

    def __init__(self, export_inputs: Callable[[Model], tuple[Any, list[Any]]]):
        self._dir: tempfile.TemporaryDirectory | None = None
        self._done: dict[int, Any] = {}
        self._inputs = export_inputs
        self.notes: list[str] = []
        # Other runtimes' per-evaluation state built on these graphs (compress.eval.openvino).
        self.others: dict[str, Any] = {}

    def samples(self, model: Model) -> tuple[Any, list[Any]]:
        """The inputs `model` is exported with, and those its export is checked on."""
        return self._inputs(model)

    def get(self, model: Model):
        key = id(model)
        if key not in self._done:
            try:
                self._done[key] = self._make(model)
            except CompressError as exc:
                self._done[key] = exc
        result = self._done[key]
        if isinstance(result, Exception):
            raise result
        return result

    def _make(self, model: Model):
        from compress.onnx import check_export, export_onnx, supplied_onnx

        sample, checks = self._inputs(model)
        graph = supplied_onnx(model.folder)
        if graph is None:
            if self._dir is None:
                self._dir = tempfile.TemporaryDirectory(prefix="compress-onnx-")
            graph = export_onnx(model.module, sample, Path(self._dir.name) / f"model-{len(self._done)}")
            check = check_export(graph.path, model.module, [sample, *checks])
            size = f"{graph.nbytes / 1e6:.1f} MB"
            how = f"exported to ONNX (opset {graph.opset}, {size}) in {graph.seconds:.1f} s"
            if model.checkpoint and graph.nbytes > 1.5 * model.checkpoint.stat().st_size:
                how += " (larger than its checkpoint: the exporter folded dequantized weights into float)"
        elif model.onnx_only:  # the graph is the model: nothing to check it against
            check = check_export(graph.path, model.module, [sample, *checks], min_cosine=0.99)
            self.notes.append(f"onnxruntime: {model.name} is its model.onnx ({graph.nbytes / 1e6:.1f} MB)")
            return graph, check
        else:
            # A graph a pass built itself computes differently: it must agree in direction, not to the bit.
            check = check_export(graph.path, model.module, [sample, *checks], min_cosine=0.99)
            how = f"ran the model.onnx beside its checkpoint ({graph.nbytes / 1e6:.1f} MB)"
        self.notes.append(
            f"onnxruntime: {model.name} {how}; largest difference from torch {check.max_abs_diff:.2g}, "
            f"worst cosine {check.cosine_min:.6f} on {len(check.shapes)} input shapes"
        )
        return graph, check

    def close(self) -> None:
        for other in self.others.values():
            other.close()
        if self._dir is not None:
            self._dir.cleanup()


def budget_notes(rows: list[dict], settings: LatencySettings) -> list[str]:
    """A note for each row whose rounds the time budget cut short, or whose minimum overran it."""
    notes = []
    for row in rows:
        if row.get("status") != "ok":
            continue
        where = f"latency {row['device']}/{row['runtime']}"
        if row.get("timing_s", 0) > settings.budget_s:
            notes.append(
                f"{where}: one round takes longer than the {settings.budget_s:g} s budget; the minimum of "
                f"{row.get('warmup_rounds', 0)} warm-up and {row['rounds']} timed rounds took "
                f"{row['timing_s']:.1f} s"
            )
        elif row.get("budget_capped") and row["rounds"] < settings.min_rounds:
            notes.append(
                f"{where}: the {settings.budget_s:g} s budget allowed {row['rounds']} timed rounds (of the "
                f"{settings.min_rounds} wanted), so the speedup's interval is wide; a larger --budget "
                "narrows it"
            )
    return notes


def latency_row(
    cand: Model,
    base: Model,
    device: str,
    runtime: str,
    settings: LatencySettings,
    inputs: Any,
    onnx: OnnxGraphs,
    progress=None,
) -> dict:
    import torch

    from compress.qmodules import kernels_ran

    if not (cand.runnable and base.runnable):
        return unavailable_row(device, runtime, "no architecture (config.json or --module) to run")
    if inputs is None:
        if base.tokenizer is None:
            return unavailable_row(device, runtime, "needs sample inputs for a model without a tokenizer")
        batch = latency_inputs(base, settings.batch_size, settings.seq_len)
        shape = {"batch_size": settings.batch_size, "seq_len": settings.seq_len}
    else:
        batch = inputs
        shape = {"batch_size": batch_size_of(inputs), "seq_len": None}
    try:
        device_available(device, runtime)
    except Unavailable as exc:
        return unavailable_row(device, runtime, str(exc))
    threads = settings.threads or torch.get_num_threads()
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    runners: list[Runner] = []
    try:
        for who, model in (("baseline", base), ("candidate", cand)):
            try:
                runners.append(RUNNERS[runtime](model, batch, device, settings, onnx))
            except CompressError as exc:
                return unavailable_row(device, runtime, f"{who}: {exc}")
        run_b, run_c = runners
        timer = cuda_timer if device == "cuda" else cpu_timer
        pair = measure_pair(run_b.run, run_c.run, settings, timer, progress)
        ran = kernels_ran(cand.module) if runtime == "torch" else {}
        # torch's allocator sees its own CUDA memory only; ONNX Runtime's is not visible to it.
        memory = cuda_during if (device, runtime) == ("cuda", "torch") else rss_during
        mem_b, mem_c = memory(run_b.run), memory(run_c.run)
    finally:
        torch.set_num_threads(previous_threads)
        for runner in runners:
            runner.close()
    items = shape["batch_size"] or 1
    row = {
        "device": device,
        "runtime": runtime,
        "status": "ok",
        "reason": None,
        **shape,
        "threads": threads,
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
        "warmup_rounds": pair.warmup,
        "timing_s": pair.seconds,
        "budget_capped": pair.budget_capped,
        **mem_c,
        **{f"baseline_{k}": v for k, v in mem_b.items()},
    }
    for key in {**run_b.info, **run_c.info}:
        row[key] = {"baseline": run_b.info.get(key), "candidate": run_c.info.get(key)}
    if ran:
        row["torch_kernels"] = ran
    return row
