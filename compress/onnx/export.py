"""Export a torch module with named inputs to ONNX, with dynamic batch and sequence axes.

Uses torch's TorchScript exporter (the dynamo exporter needs onnxscript, which compress does not
pull in). The module is traced in eval mode and left in the mode it was in. Weights over 2 GB go
to an external data file beside the graph, as ONNX's protobuf limit requires.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compress.checkpoint import atomic_output_dir
from compress.errors import BadInput, Unsupported

ONNX_NAME = "model.onnx"
DEFAULT_OPSET = 18  # BitwiseAnd (INT4 nibble unpacking) needs 18
EXTERNAL_DATA_BYTES = 2 * 1024**3 - 64 * 1024**2  # protobuf's 2 GB limit, with room for the graph


@dataclass
class OnnxExport:
    """An ONNX graph on disk and how it was made."""

    path: Path
    input_names: list[str]
    source: str  # "exported" | "supplied"
    opset: int | None = None
    external_data: bool = False
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)

    @property
    def nbytes(self) -> int:
        return sum(p.stat().st_size for p in self.path.parent.glob(self.path.name + "*"))

    def describe(self) -> dict:
        return {
            "source": self.source,
            "opset": self.opset,
            "bytes": self.nbytes,
            "external_data": self.external_data,
            "export_seconds": round(self.seconds, 3),
        }


def named_inputs(inputs: Any) -> tuple[dict[str, Any], str]:
    """Sample inputs as {name: tensor} and how the module takes them ('kwargs' or 'args')."""
    import torch

    if isinstance(inputs, dict):
        return dict(inputs), "kwargs"
    if isinstance(inputs, torch.Tensor):
        return {"input": inputs}, "args"
    if isinstance(inputs, tuple | list) and all(isinstance(x, torch.Tensor) for x in inputs):
        return {f"input_{i}": x for i, x in enumerate(inputs)}, "args"
    raise BadInput(f"ONNX export needs tensors as sample inputs, got a {type(inputs).__name__}.")


def dynamic_axes(inputs: dict[str, Any]) -> dict[str, dict[int, str]]:
    """Batch is dynamic for every input; the second axis too for 2-D integer inputs (token ids, masks)."""
    axes: dict[str, dict[int, str]] = {}
    has_sequence = False
    for name, tensor in inputs.items():
        axes[name] = {0: "batch"}
        if tensor.dim() == 2 and not tensor.is_floating_point():
            axes[name][1] = "sequence"
            has_sequence = True
    axes["output"] = {0: "batch", 1: "sequence"} if has_sequence else {0: "batch"}
    return axes


def _wrapper(module, names: list[str], call: str):
    """A module taking positional tensors in `names` order and returning the main output tensor."""
    import torch

    from compress.eval.calls import main_output

    class NamedInputs(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = module

        def forward(self, *args):
            if call == "kwargs":
                return main_output(self.inner(**dict(zip(names, args, strict=True))))
            return main_output(self.inner(*args))

    return NamedInputs().eval()


def export_onnx(
    module,
    inputs: Any,
    out_dir: str | Path,
    *,
    opset: int = DEFAULT_OPSET,
    external_data_bytes: int = EXTERNAL_DATA_BYTES,
    share_tied: bool = False,
) -> OnnxExport:
    """Export `module` called with `inputs` (a dict of named tensors, a tensor, or a tuple) to
    `out_dir/model.onnx`. Raises Unsupported with torch's reason when the module cannot export.

    Use sample inputs with padding (a batch of texts of different lengths): a mask of all ones lets
    some architectures skip masking while tracing, and the graph would then ignore padding.
    `share_tied` stores a tied embedding once (see share_tied_weights); off by default: on Gemma-3-270M
    batch 8 x 128 ran 2x slower that way in a first, noisy measurement (benchmarks/results/peers-gemma.md).
    """
    import torch

    named, call = named_inputs(inputs)
    names = list(named)
    was_training = module.training
    wrapper = _wrapper(module, names, call)
    weight_bytes = sum(t.numel() * t.element_size() for t in module.state_dict().values())
    started = time.perf_counter()
    out = Path(out_dir)
    # The graph may go beside a checkpoint: only its own files are replaced there.
    owned = (ONNX_NAME, ONNX_NAME + ".data")
    with atomic_output_dir(out, owns=owned) as stage, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with torch.inference_mode(False), torch.no_grad():
                torch.onnx.export(
                    wrapper,
                    tuple(named.values()),
                    str(stage / ONNX_NAME),
                    dynamo=False,
                    input_names=names,
                    output_names=["output"],
                    dynamic_axes=dynamic_axes(named),
                    opset_version=opset,
                )
        except Exception as exc:  # the exporter raises many types; the reason is what matters
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise Unsupported(f"ONNX export failed: {first[:300]}") from None
        finally:
            module.train(was_training)
        external = weight_bytes > external_data_bytes
        shared = share_tied_weights(stage / ONNX_NAME, external) if share_tied else 0
        if external and not shared:
            _move_weights_to_external_data(stage / ONNX_NAME)
    notes = sorted({str(w.message).splitlines()[0][:160] for w in caught if "legacy" not in str(w.message)})
    return OnnxExport(
        path=out / ONNX_NAME,
        input_names=names,
        source="exported",
        opset=opset,
        external_data=external or (out / (ONNX_NAME + ".data")).exists(),
        seconds=time.perf_counter() - started,
        warnings=notes,
    )


def _move_weights_to_external_data(path: Path) -> None:
    """Rewrite `path` with its initializers in `model.onnx.data` beside it."""
    import onnx

    model = onnx.load(str(path))
    onnx.save_model(
        model,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=path.name + ".data",
    )


def share_tied_weights(path: Path, external: bool = False) -> int:
    """Store a tied embedding once: TorchScript folds the tied lm_head into its own transposed copy of
    the embedding table (Gemma-3-270M: 262k x 640 floats twice, 1.4 GB instead of 0.7 GB). A MatMul
    whose weight equals the transpose of a Gather's table is fed from one Transpose of that table
    instead; ONNX Runtime folds the Transpose when it loads the graph, so inference is unchanged.
    Rewrites `path` when something was shared and returns how many weights were."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    tables = {n.input[0] for n in graph.node if n.op_type == "Gather" and n.input[0] in inits}
    by_shape = {tuple(inits[t].dims): t for t in tables if len(inits[t].dims) == 2}
    arrays: dict[str, Any] = {}

    def array(name: str):
        if name not in arrays:
            arrays[name] = numpy_helper.to_array(inits[name])
        return arrays[name]

    shared: dict[str, str] = {}  # MatMul weight -> the table it is the transpose of
    for node in graph.node:
        weight = node.input[1] if node.op_type == "MatMul" and len(node.input) == 2 else None
        if weight not in inits or weight in tables or len(inits[weight].dims) != 2:
            continue
        table = by_shape.get(tuple(reversed(inits[weight].dims)))
        if table is not None and (weight in shared or np.array_equal(array(weight), array(table).T)):
            shared[weight] = table
    if not shared:
        return 0
    transposes = []
    for table in sorted(set(shared.values())):
        transposes.append(helper.make_node("Transpose", [table], [f"{table}.T"], perm=[1, 0]))
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in shared:
                node.input[i] = f"{shared[name]}.T"
    still_used = {name for node in graph.node for name in node.input}
    kept = [i for i in graph.initializer if i.name not in shared or i.name in still_used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = transposes + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    location = path.name + ".data" if external else None
    onnx.save_model(model, str(path), save_as_external_data=external, location=location)
    return len(shared)


def supplied_onnx(folder: Path | None) -> OnnxExport | None:
    """An ONNX graph a pass wrote beside the checkpoint (`model.onnx`), to be used instead of exporting."""
    if folder is None or not (folder / ONNX_NAME).is_file():
        return None
    import onnx

    path = folder / ONNX_NAME
    try:
        graph = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise BadInput(f"{path}: is not a readable ONNX file ({exc}).") from None
    initializers = {i.name for i in graph.graph.initializer}
    names = [i.name for i in graph.graph.input if i.name not in initializers]
    opset = max((o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")), default=None)
    return OnnxExport(path=path, input_names=names, source="supplied", opset=opset)
