"""Quantized embedding tables in the integer ONNX graph: the stored codes, looked up, then rescaled.

As ONNX Runtime's quantizer does for a Gather, the table is stored in integers and dequantized after
the lookup, so the file holds a quarter (INT8) or an eighth (INT4) of the float table and only the
rows a batch uses are turned into floats:

- INT8 (symmetric per row, i.e. per token): Gather(codes, ids) -> Cast to float, times
  Gather(scales, ids) on a new last axis;
- INT4 (group-wise along the row, two codes per byte, the even column in the low nibble): Gather of
  the packed bytes, the nibbles split with BitwiseAnd and an exact division and interleaved, then
  (codes - zero) * scale per group, with the zero points (8 when symmetric) and the float16 scales
  gathered by the same ids.

Each is the same float arithmetic as QuantEmbedding.forward on the gathered rows, so the graph's
lookup equals torch's exactly. Standard ONNX operators only (opset 18), which OpenVINO reads too.
"""

from __future__ import annotations

from typing import Any

INT4_SYMMETRIC_ZERO = 8.0


def gather_rows(rw: Any, table: Any, ids: str, output: str) -> None:
    """Append to `rw` (compress.onnx.integer's rewriter) the nodes that compute `output`, the float
    rows of quantized `table` (a twin.Table) at token ids `ids`."""
    import numpy as np
    from onnx import TensorProto, helper

    qt = table.qt
    last = rw.const("axes", np.array([-1], dtype=np.int64))

    def gathered(stem: str, array) -> str:
        return rw.node("Gather", [rw.const(stem, array), ids])

    def as_float(x: str) -> str:
        return rw.node("Cast", [x], to=TensorProto.FLOAT)

    if qt.scheme == "int8":
        codes = as_float(gathered("emb_s8", qt.data.numpy()))
        scales = rw.node("Unsqueeze", [gathered("emb_scale", qt.scale.float().numpy()), last])
        rw.nodes.append(helper.make_node("Mul", [codes, scales], [output], name=rw.fresh("emb")))
        return
    dim, group = qt.cols, qt.group_size
    groups = dim // group
    id_shape = rw.node("Shape", [ids])

    def shape(*tail: int) -> str:  # the ids' shape followed by `tail`
        return rw.node("Concat", [id_shape, rw.const("shape", np.array(tail, np.int64))], axis=0)

    codes = unpack_nibbles(rw, gathered("emb_u4", qt.data.numpy()), shape(groups, group))
    codes = as_float(codes)
    if qt.zero is None:
        zero = rw.const("emb_zp", np.array(INT4_SYMMETRIC_ZERO, dtype=np.float32))
    else:
        zeros = unpack_nibbles(rw, gathered("emb_zp_u4", qt.zero.numpy()), shape(-1))
        if groups % 2:  # the last byte holds one zero point and a padding nibble
            bounds = [np.array([v], np.int64) for v in (0, groups, -1)]
            zeros = rw.node("Slice", [zeros, *(rw.const("slice", b) for b in bounds)])
        zero = rw.node("Unsqueeze", [as_float(zeros), last])
    scale = rw.node("Unsqueeze", [as_float(gathered("emb_scale", qt.scale.numpy())), last])
    values = rw.node("Mul", [rw.node("Sub", [codes, zero]), scale])
    rw.nodes.append(helper.make_node("Reshape", [values, shape(dim)], [output], name=rw.fresh("emb")))


def unpack_nibbles(rw: Any, packed: str, shape: str) -> str:
    """uint8 bytes [..., n] -> their 2n codes (low nibble first, as compress.formats packs them),
    reshaped to `shape` (the name of a shape tensor)."""
    import numpy as np

    low = rw.node("BitwiseAnd", [packed, rw.const("mask", np.array(0x0F, dtype=np.uint8))])
    # (byte - low) / 16 rather than BitShift: OpenVINO 2026.4 reads BitShift as a rounding division
    # (0xAB >> 4 gave 11); this division is exact in every runtime.
    sixteen = rw.const("sixteen", np.array(16, dtype=np.uint8))
    high = rw.node("Div", [rw.node("Sub", [packed, low]), sixteen])
    last = rw.const("axes", np.array([-1], dtype=np.int64))
    pairs = [rw.node("Unsqueeze", [nibbles, last]) for nibbles in (low, high)]
    return rw.node("Reshape", [rw.node("Concat", pairs, axis=-1), shape])
