"""compress models as OpenVINO models: converted from compress's own ONNX graphs, checked against
torch, and written as an IR folder.

Where the OpenVINO model comes from (`convert_module`):
- a quantized model: compress's integer ONNX graph (compress.onnx.integer, QDQ form), read by
  OpenVINO's ONNX frontend, so OpenVINO runs the integers compress stored, not re-quantized ones:
  static INT8 layers become u8 x i8 FullyConnected kernels, INT4 (MatMulNBits) 4-bit compressed
  weights, quantized embeddings int8 / int4 tables gathered then rescaled;
- a float model (pruned, distilled): its float ONNX export;
- a bf16 / fp16 model: the float ONNX export of compress.precision.float32_twin (its 16-bit weights
  widened exactly), compiled with the 16-bit inference precision compress.precision.precision_hint
  gives (the evaluator does; an IR's reader chooses its own). An fp16 model's IR stores its weights
  as float16 (exact); a bf16 model's as float32 (save_model has no bf16 compression);
- a folder holding only a graph (a backend's model.onnx): that graph.

Refused (`refusal`): INT8 with dynamic activations (OpenVINO reads the MatMulIntegerToFloat graph
faithfully but runs it as float matmuls on decompressed int8 weights after float-emulated rounding:
no integer kernel, slower than float) and INT8 weight-only (no faster OpenVINO kernel on batches).

The IR keeps float weights in float32 (save_model's compress_to_fp16=half): FP16 would round them
and the outputs would differ from torch's by more than float rounding. The IR's rt_info carries
runtime_options DYNAMIC_QUANTIZATION_GROUP_SIZE 0, which OpenVINO applies when it compiles the model;
it does not apply an inference precision from there, so compile with INFERENCE_PRECISION_HINT f32
(compress.openvino.core.FAITHFUL) for compress's accuracy on CPUs whose default is bf16.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from compress.errors import BadInput, Unsupported

IR_DIR = "openvino"
IR_NAME = "openvino_model.xml"


def ir_path(folder: Path | None) -> Path | None:
    """The IR an export wrote beside a checkpoint (`<folder>/openvino/openvino_model.xml`), if any."""
    if folder is None:
        return None
    path = Path(folder) / IR_DIR / IR_NAME
    return path if path.is_file() else None


def refusal(scheme: str | None, activations: str | None) -> str | None:
    """One sentence on why OpenVINO cannot run this quantization on integer kernels, or None."""
    if scheme == "int8" and activations == "dynamic":
        return (
            "export openvino with int8 needs activations static: OpenVINO has no kernel for per-token "
            "dynamic activation codes (it runs that graph as float matmuls on decompressed int8 weights)."
        )
    if scheme == "int8" and activations in (None, "none"):
        return (
            "export openvino with int8 needs activations static: weight-only INT8 has no OpenVINO "
            "kernel faster than float on batches (use int4 for weight-only)."
        )
    return None


def quantization(module) -> tuple[str | None, str]:
    """(scheme of the quantized Linear layers or None, their activation mode), with INT8 first,
    except in an INT4 model whose INT8 layers are weight-only (an INT4 pass's keep_int8): INT4."""
    from compress.onnx.integer import activation_mode
    from compress.qmodules import QuantLinear

    schemes = {m.scheme for m in module.modules() if isinstance(m, QuantLinear)}
    activations = activation_mode(module)
    if "int4" in schemes and activations == "none":
        return "int4", activations
    return ("int8" if "int8" in schemes else next(iter(schemes), None)), activations


def tolerance(module) -> dict:
    """How closely OpenVINO must agree with `module` (compare_outputs' settings): float rounding for a
    float model; a cosine for integer graphs (rounded activations make a deep model chaotic, see
    compress.onnx.integer.export_quantized_folder)."""
    from compress.onnx.integer import MIN_COSINE_ROUNDED_ACTIVATIONS
    from compress.qmodules import _QuantizedWeight

    if not any(isinstance(m, _QuantizedWeight) for m in module.modules()):
        return {}
    _, activations = quantization(module)
    return {"min_cosine": 0.999 if activations == "none" else MIN_COSINE_ROUNDED_ACTIVATIONS}


def convert_module(module, sample: Any, workdir: Path):
    """An ov.Model of torch `module` (called with `sample`) through compress's ONNX graph written in
    `workdir`, and what that graph was. Raises Unsupported when a quantized layer has no integer form."""
    from compress.onnx.export import export_onnx
    from compress.onnx.integer import export_integer_onnx
    from compress.openvino.core import require
    from compress.precision import float32_twin, scheme_of_module
    from compress.qmodules import _QuantizedWeight

    scheme = scheme_of_module(module)
    if scheme is not None:  # OpenVINO rounds to the 16-bit precision it is compiled with
        graph = export_onnx(float32_twin(module), sample, workdir)
        how = f"a float32 ONNX export of its {scheme} weights, widened exactly"
        return require().convert_model(str(graph.path)), how
    if any(isinstance(m, _QuantizedWeight) for m in module.modules()):
        _, activations = quantization(module)
        export_integer_onnx(module, sample, workdir / "model.onnx", activations, form="qdq")
        return require().convert_model(str(workdir / "model.onnx")), "compress's integer ONNX graph (QDQ)"
    graph = export_onnx(module, sample, workdir / "float")
    return require().convert_model(str(graph.path)), "its float ONNX export"


def check_compiled(compiled, module, samples: list[Any], name: str, **tolerances):
    """OpenVINO's outputs against `module`'s on `samples` (Unsupported with the numbers on a mismatch)."""
    from compress.onnx.check import compare_outputs
    from compress.openvino.module import OvModule

    runner = OvModule(compiled)

    def run(named: dict[str, Any]):
        return runner(**named).last_hidden_state.numpy()

    return compare_outputs(run, module, samples, name=name, runtime="OpenVINO", **tolerances)


def export_ir(folder: Path, samples: Callable[[Any], tuple[Any, list[Any]]], model: Any = None) -> Path:
    """Write `folder/openvino/` (openvino_model.xml + .bin, config and tokenizer files) for the model
    in `folder`, after checking it against the torch module on `samples(model)` (the inputs to export
    with, and more to check on: compress.onnx.samples.export_samples); returns the XML's path.
    `model`: the folder's Model when the caller has loaded it already."""
    from compress.model import load
    from compress.openvino.core import compile_model, require
    from compress.precision import scheme_of_module

    model = load(folder) if model is None else model
    if not model.runnable:
        raise Unsupported(f"{folder}: has no config.json, so there is no model to export to OpenVINO.")
    sample, checks = samples(model)
    with tempfile.TemporaryDirectory(prefix="compress-ov-") as tmp:
        if model.onnx_only:  # a backend's graph: OpenVINO reads it as it is
            ov_model, source = require().convert_model(str(model.checkpoint)), "the folder's model.onnx"
            tolerances: dict = {"min_cosine": 0.99}
        else:
            reason = refusal(*quantization(model.module))
            if reason:
                raise BadInput(reason)
            ov_model, source = convert_module(model.module, sample, Path(tmp))
            tolerances = tolerance(model.module)
        scheme = None if model.onnx_only else scheme_of_module(model.module)
        if scheme == "bf16":
            store_bf16_weights(ov_model)
        check_compiled(compile_model(ov_model), model.module, [sample, *checks], IR_NAME, **tolerances)
        return write_ir(ov_model, Path(folder) / IR_DIR, Path(folder), source, half=scheme == "fp16")


def store_bf16_weights(ov_model, min_values: int = 1024) -> int:
    """Hold every float32 weight of `ov_model` whose values are all bfloat16 values (a bf16 model's,
    widened for the graph) as a bfloat16 constant converted to f32 where it is read: the IR's file
    halves and the values are the same. Returns how many weights it replaced."""
    import numpy as np

    from compress.openvino.core import require

    ov = require()
    from openvino import opset13 as ops

    replaced = 0
    for op in ov_model.get_ops():
        if op.get_type_name() != "Constant" or op.get_element_type() != ov.Type.f32:
            continue
        data = np.ascontiguousarray(op.get_data(), dtype=np.float32)
        bits = data.view(np.uint32)
        if data.size < min_values or np.any(bits & 0xFFFF):  # small, or not exactly bfloat16
            continue
        stored = ov.Tensor(ov.Type.bf16, list(data.shape))
        stored.data.view(np.uint16)[...] = (bits >> 16).astype(np.uint16)
        widened = ops.convert(ops.constant(stored), ov.Type.f32)
        for reader in list(op.output(0).get_target_inputs()):
            reader.replace_source_output(widened.output(0))
        replaced += 1
    ov_model.validate_nodes_and_infer_types()
    return replaced


def write_ir(
    ov_model,
    out: Path,
    side_files_from: Path | None,
    source: str,
    extra: list[Path] | tuple[Path, ...] = (),
    runtime_options: dict[str, str] | None = None,
    half: bool = False,
) -> Path:
    """Save `ov_model` as `out/openvino_model.xml` + `.bin` (float weights kept in float32; `half`:
    stored as float16, exact for an fp16 model's weights) with the config and tokenizer files of
    `side_files_from` and the `extra` files beside it, atomically. `runtime_options` go into the
    IR's rt_info (OpenVINO applies them when it compiles the IR and the caller does not set them),
    with DYNAMIC_QUANTIZATION_GROUP_SIZE 0 always."""
    from compress._version import __version__
    from compress.checkpoint import atomic_output_dir
    from compress.model import SIDE_FILES
    from compress.openvino.core import require

    for key, value in {"DYNAMIC_QUANTIZATION_GROUP_SIZE": "0", **(runtime_options or {})}.items():
        ov_model.set_rt_info(value, ["runtime_options", key])
    ov_model.set_rt_info(__version__, ["compress", "version"])
    ov_model.set_rt_info(source, ["compress", "source"])
    with atomic_output_dir(out) as stage:
        require().save_model(ov_model, str(stage / IR_NAME), compress_to_fp16=half)
        for name in SIDE_FILES if side_files_from is not None else ():
            src = side_files_from / name
            if src.is_file():
                (stage / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, stage / name)
        for path in extra:
            shutil.copy2(path, stage / path.name)
    return out / IR_NAME
