"""compress's quantized weights as OpenVINO compressed-weight subgraphs: the stored integers,
scales and zero points as constants, dequantized in the graph.

OpenVINO's weight-compression pattern (the one NNCF writes and the CPU plugin fuses into
FullyConnected / Gather kernels that read the integers): an integer Constant, Convert to f32,
Subtract the zero point, Multiply by the scale, and for group-wise INT4 a Reshape back to the
weight's shape:

- INT8 (symmetric per output row): i8 [rows, cols] -> f32, times the f32 scales [rows, 1];
- INT4 (group-wise along the row): u4 [rows, groups, group] -> f32, minus the u4 zero points
  [rows, groups, 1] (a scalar 8 when symmetric), times the f16 scales [rows, groups, 1] converted
  to f32, reshaped to [rows, cols].

That is QuantizedTensor.dequantize's float32 arithmetic, so a graph holding it computes what
compress's torch model computes. OpenVINO packs u4 with the first element in the low nibble, as
compress does: the packed codes go into the IR byte for byte (and the zero points too, except for
an odd number of groups, where compress pads each row and OpenVINO does not).
"""

from __future__ import annotations

from typing import Any

from compress.errors import Unsupported


def _constant(array: Any, element_type=None):
    """An ov Constant holding a copy of numpy `array` (its bytes read as `element_type` when given)."""
    import numpy as np

    from compress.openvino.core import require

    ov = require()
    array = np.ascontiguousarray(array)
    if element_type is None:
        return ov.op.Constant(array, shared_memory=False)
    tensor = ov.Tensor(array, ov.Shape(list(array.shape)), element_type)  # a view of `array`
    return ov.op.Constant(tensor, shared_memory=False)


def _u4(packed: Any, shape: list[int]):
    """A u4 Constant of `shape` from bytes packed two codes per byte, the first in the low nibble."""
    import numpy as np

    from compress.openvino.core import require

    ov = require()
    tensor = ov.Tensor(np.ascontiguousarray(packed), ov.Shape(shape), ov.Type.u4)  # a view of `packed`
    return ov.op.Constant(tensor, shared_memory=False)


def stored_constants(qt: Any) -> dict[str, Any]:
    """The Constants holding QuantizedTensor `qt` as stored: codes, scale and (INT4) zero points."""
    import numpy as np

    from compress.openvino.core import require

    ov = require()
    if len(qt.shape) != 2:
        raise Unsupported(f"OpenVINO export: a quantized weight of shape {list(qt.shape)} is not a matrix.")
    rows = qt.shape[0]
    if qt.scheme == "int8":
        return {"codes": _constant(qt.data.numpy()), "scale": _constant(qt.scale.float().numpy()[:, None])}
    groups, group = qt.groups, qt.group_size
    if qt.zero is None:
        zero = _constant(np.array(8, dtype=np.uint8), ov.Type.u4)
    elif groups % 2 == 0:
        zero = _u4(qt.zero.numpy(), [rows, groups, 1])
    else:  # compress pads each row's zero points to whole bytes; OpenVINO packs the tensor as one run
        zero = _constant(qt.zero_points().numpy().reshape(rows, groups, 1), ov.Type.u4)
    return {
        "codes": _u4(qt.data.numpy(), [rows, groups, group]),
        "zero": zero,
        "scale": _constant(qt.scale.numpy().reshape(rows, groups, 1)),
        "shape": _constant(np.array(list(qt.shape), dtype=np.int64)),
    }


def decompressed(parts: dict[str, Any]):
    """The f32 weight computed from `stored_constants`: (codes - zero) * scale, as compress does."""
    from openvino import opset13 as ops

    from compress.openvino.core import require

    f32 = require().Type.f32
    codes = ops.convert(parts["codes"], f32)
    if "zero" not in parts:  # INT8: symmetric per row
        return ops.multiply(codes, parts["scale"]).output(0)
    values = ops.subtract(codes, ops.convert(parts["zero"], f32))
    values = ops.multiply(values, ops.convert(parts["scale"], f32))
    return ops.reshape(values, parts["shape"], special_zero=False).output(0)


def compress_constants(ov_model: Any, quantized: dict[str, Any]) -> set[str]:
    """Replace each float Constant of `ov_model` named in `quantized` (tensor name -> QuantizedTensor)
    by the subgraph that dequantizes its stored integers: one dequantization per consumer, all
    reading the same integer constants (a tied embedding table feeds a Gather and the output
    MatMul, and each fuses with its own). Returns the names replaced."""
    done: set[str] = set()
    stored: dict[int, dict[str, Any]] = {}  # one set of constants per stored tensor (tied names share it)
    for op in ov_model.get_ops():
        if op.get_type_name() != "Constant":
            continue
        names = op.output(0).get_names() | {op.get_friendly_name()}
        name = next((n for n in sorted(names) if n in quantized), None)
        if name is None:
            continue
        qt = quantized[name]
        shape = list(op.get_output_shape(0))
        if shape != list(qt.shape):
            raise Unsupported(
                f"OpenVINO export: the graph holds '{name}' as a {shape} matrix, the checkpoint as "
                f"{list(qt.shape)} (transposed or folded by the converter)."
            )
        if qt.data.data_ptr() not in stored:
            stored[qt.data.data_ptr()] = stored_constants(qt)
        parts = stored[qt.data.data_ptr()]
        for target in list(op.output(0).get_target_inputs()):
            target.replace_source_output(decompressed(parts))
        done.add(name)
    ov_model.validate_nodes_and_infer_types()
    return done


def integer_constants(ov_model: Any) -> dict[str, list[bytes]]:
    """The bytes of every integer weight constant of `ov_model` by element type ('u4', 'i8', ...):
    what a test compares with the checkpoint's stored codes."""
    found: dict[str, list[bytes]] = {}
    for op in ov_model.get_ops():
        if op.get_type_name() != "Constant":
            continue
        kind = op.get_element_type().get_type_name()
        if kind in ("u4", "i4", "u8", "i8") and len(op.get_output_shape(0)) >= 2:
            data = op.get_data()
            found.setdefault(kind, []).append(bytes(memoryview(data).cast("B")))
    return found
