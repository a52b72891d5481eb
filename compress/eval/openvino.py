"""The evaluator's OpenVINO runtime: baseline and candidate compiled by OpenVINO, timed interleaved as
on the other runtimes, and scored by the accuracy task through OpenVINO.

What each model runs as (the first that applies):
1. the IR an export wrote beside its checkpoint (`openvino/openvino_model.xml`);
2. the model.onnx beside it (`--export onnx`, or a backend's graph), read by OpenVINO;
3. compress's integer ONNX graph, built now (a quantized checkpoint without a graph: its static INT8
   layers still run on integer kernels);
4. its float ONNX export (the float baseline; or a quantized model whose layers have no integer
   form, with the reason in a note).
Each is checked against the torch module before it is used (float rounding for float graphs, a
cosine for integer ones), compiled with compress.openvino.core's FAITHFUL settings (float32 where
not integer, no dynamic activation quantization) except for the inference precision that
compress.precision.precision_hint gives: a bf16 / fp16 model's 16-bit one, and bf16 for the float
parts of a static INT8 graph, where the CPU has the instructions; PERFORMANCE_HINT
LATENCY and the row's threads, and its runtime graph tells which precision each matrix product runs in.
"""

from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compress.errors import CompressError
from compress.eval.latency import LatencySettings, Runner
from compress.model import Model


@dataclass
class Compiled:
    compiled: Any  # openvino.CompiledModel
    info: dict  # the row's `openvino` entry: source, inference precision, the check's numbers
    precisions: dict[str, int]  # compress.openvino.precisions


class OpenVinoModels:
    """Each model converted to OpenVINO once per evaluation, compiled once per device and threads.
    Built on the evaluation's ONNX graphs (compress.eval.runtimes.OnnxGraphs), which it shares."""

    def __init__(self, graphs):
        self.graphs = graphs
        self._converted: dict[int, tuple | CompressError] = {}
        self._compiled: dict[tuple, Compiled | CompressError] = {}
        self._dir: tempfile.TemporaryDirectory | None = None  # integer graphs built here

    def close(self) -> None:
        if self._dir is not None:
            self._dir.cleanup()

    def get(self, model: Model, device: str, threads: int | None) -> Compiled:
        """`model` compiled for `device` and `threads`, checked against torch (once; a failure too)."""
        key = (id(model), device, threads)
        if key not in self._compiled:
            try:
                self._compiled[key] = self._compile(model, device, threads)
            except CompressError as exc:
                self._compiled[key] = exc
        result = self._compiled[key]
        if isinstance(result, CompressError):
            raise result
        return result

    def _compile(self, model: Model, device: str, threads: int | None) -> Compiled:
        from compress.openvino import compile_model, integer_kernels, precisions
        from compress.openvino.ir import check_compiled
        from compress.precision import precision_hint, scheme_of_module

        ov_model, info, tolerances = self.converted(model)
        scheme = None if model.onnx_only else scheme_of_module(model.module)
        static = any(op.get_type_name() == "FakeQuantize" for op in ov_model.get_ops())
        hint, why = precision_hint(scheme, static_int8=static)
        compiled = compile_model(ov_model, device, threads, precision=hint)
        sample, others = self.graphs.samples(model)
        check = check_compiled(compiled, model.module, [sample, *others], model.name, **tolerances)
        counts = precisions(compiled)
        self.graphs.notes.append(
            f"openvino: {model.name} ran {_SOURCES[info['source']]} ({_listed(counts)}); largest "
            f"difference from torch {check.max_abs_diff:.2g}, worst cosine {check.cosine_min:.6f}"
        )
        if _quantized(model) and counts and not integer_kernels(counts):
            self.graphs.notes.append(
                f"openvino: {model.name} runs no integer kernel in OpenVINO ({_listed(counts)}): its "
                "activations stay float"
            )
        if scheme is not None or hint != "f32":
            note = f"openvino: {model.name} compiled with inference precision {hint}: {why}"
            self.graphs.notes.append(note)
        info = {**info, "inference_precision": hint, **check.describe()}
        return Compiled(compiled, info, counts)

    def converted(self, model: Model) -> tuple[Any, dict, dict]:
        """(ov.Model, where it came from, the check's tolerances), made once per model."""
        if id(model) not in self._converted:
            try:
                self._converted[id(model)] = self._convert(model)
            except CompressError as exc:
                self._converted[id(model)] = exc
        result = self._converted[id(model)]
        if isinstance(result, CompressError):
            raise result
        return result

    def _convert(self, model: Model) -> tuple[Any, dict, dict]:
        from compress.errors import Unsupported
        from compress.openvino import convert_module, ir_path, require
        from compress.openvino.core import core
        from compress.openvino.ir import tolerance
        from compress.precision import scheme_of_module
        from compress.qmodules import _QuantizedWeight

        ov = require()
        ir = ir_path(model.folder)
        if model.onnx_only:  # a backend's graph; its module runs it in ONNX Runtime
            graph, _ = self.graphs.get(model)
            info = {"source": "supplied", "path": str(graph.path), "bytes": graph.nbytes}
            return ov.convert_model(str(graph.path)), info, {"min_cosine": 0.99}
        if ir is not None:
            info = {
                "source": "ir",
                "path": str(ir),
                "bytes": sum(p.stat().st_size for p in (ir, ir.with_suffix(".bin"))),
            }
            return core().read_model(str(ir)), info, tolerance(model.module)
        if model.folder is not None and (model.folder / "model.onnx").is_file():
            graph, _ = self.graphs.get(model)
            info = {"source": "supplied", "path": str(graph.path), "bytes": graph.nbytes}
            return ov.convert_model(str(graph.path)), info, tolerance(model.module)
        if any(isinstance(m, _QuantizedWeight) for m in model.module.modules()):
            sample, _ = self.graphs.samples(model)
            if self._dir is None:
                self._dir = tempfile.TemporaryDirectory(prefix="compress-ov-")
            workdir = Path(self._dir.name) / f"model-{len(self._converted)}"
            workdir.mkdir()
            try:
                ov_model, how = convert_module(model.module, sample, workdir)
                source = "16-bit graph" if scheme_of_module(model.module) else "integer graph"
                info = {"source": source, "graph": how, "bytes": (workdir / "model.onnx").stat().st_size}
                return ov_model, info, tolerance(model.module)
            except Unsupported as exc:
                self.graphs.notes.append(f"openvino: {model.name} runs as its float ONNX export ({exc})")
        graph, _ = self.graphs.get(model)
        return ov.convert_model(str(graph.path)), {"source": "exported", "bytes": graph.nbytes}, {}


_SOURCES = {
    "ir": "the IR beside its checkpoint",
    "supplied": "the model.onnx beside its checkpoint",
    "integer graph": "compress's integer ONNX graph (QDQ), built now",
    "16-bit graph": "a float32 ONNX graph of its 16-bit weights (widened exactly), built now",
    "exported": "its float ONNX export",
}


def _quantized(model: Model) -> bool:
    """Whether `model` has integer layers (a 16-bit model's run in its 16-bit precision)."""
    from compress.qmodules import _Float16Weight, _QuantizedWeight

    if model.onnx_only:
        return True
    layers = model.module.modules()
    return any(isinstance(m, _QuantizedWeight) and not isinstance(m, _Float16Weight) for m in layers)


def _listed(counts: dict[str, int]) -> str:
    return ", ".join(f"{label} ×{n}" for label, n in counts.items())


def models_of(graphs) -> OpenVinoModels:
    """The evaluation's OpenVinoModels, kept with its ONNX graphs."""
    return graphs.others.setdefault("openvino", OpenVinoModels(graphs))


def openvino_runner(model: Model, batch: Any, device: str, settings: LatencySettings, graphs) -> Runner:
    import torch

    from compress.onnx.export import named_inputs
    from compress.openvino.module import OvModule

    compiled = models_of(graphs).get(model, device, settings.threads or torch.get_num_threads())
    module = OvModule(compiled.compiled)
    info = {"openvino": compiled.info, "openvino_precisions": compiled.precisions}
    named = named_inputs(batch)[0]
    if module.stateful is not None:  # a causal LM's stateful IR: the whole batch from an empty cache
        return Runner(lambda: module(**named), info=info)
    feeds = module.feeds(named)
    request = module.request
    return Runner(lambda: request.infer(feeds), info=info)


def accuracy_through(
    task, base: Model, cand: Model, graphs, devices, threads: int | None, progress=None
) -> dict:
    """The task's score of baseline and candidate run by OpenVINO: {status, value, baseline,
    retention, and the task's numeric details}, or {status: unavailable, reason}."""
    import torch

    from compress.openvino import check_device
    from compress.openvino.module import OvModule

    device = "cpu" if "cpu" in devices else devices[0]
    threads = threads or torch.get_num_threads()
    try:
        check_device(device)
        ov = models_of(graphs)
        through = [
            dataclasses.replace(m, module=OvModule(ov.get(m, device, threads).compiled)) for m in (base, cand)
        ]
    except CompressError as exc:
        return {"status": "unavailable", "reason": str(exc)}
    result = task.run(through[0], through[1], progress=progress)
    numbers = {
        k: v for k, v in result.details.items() if isinstance(v, int | float) and not isinstance(v, bool)
    }
    return {
        "status": result.status,
        "device": device,
        "value": result.value,
        "baseline": result.baseline,
        "retention": result.retention,
        **numbers,
    }
