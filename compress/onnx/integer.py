"""ONNX graphs with integer kernels for a quantized model, holding exactly its stored codes.

The model is exported once as float (each quantized Linear replaced by a float Linear holding its
dequantized weight, each quantized embedding by its dequantized table); then every MatMul/Gemm whose
weight is one of those dequantized matrices (found by value), and every Gather of such a table, is
rewritten to run on the stored integers:

- INT8 with dynamic activations: per-token symmetric scales s = max|x_row| / 127 computed at run
  time; codes round(x / s) + 128 as uint8 (one zero point for every row, so ONNX Runtime's fast
  u8 x s8 kernel applies), MatMulIntegerToFloat with the int8 weight, its per-column scales and
  the row scales s. Layers reading the same tensor (Q, K, V) share one quantization of it.
- INT8 with static activations: one QuantizeLinear per layer input with its calibrated scale and
  zero point, then MatMulIntegerToFloat ("qoperator", the default) or DequantizeLinear + MatMul
  on DequantizeLinear'd weights ("qdq"). Both ran at the same speed on MiniLM (benchmarks/results/
  peers.md), but ONNX Runtime turns QDQ back into integer kernels only around the MatMuls its
  fusions recognise (a 2-D graph ran its QDQ pairs around a float Gemm), so qoperator is the default.
- SmoothQuant factors (a layer's input_smooth): one Mul before the quantization of each input.
- INT4 (weight-only): com.microsoft MatMulNBits with the packed codes, scales and zero points as
  stored (the stored form is MatMulNBits' layout).
- INT8 weight-only (the layers an INT4 pass keeps at INT8), QDQ form only: DequantizeLinear of the
  int8 weight into a float MatMul, which OpenVINO runs on the compressed weight. ONNX Runtime has no
  kernel for it faster than float, so the qoperator form refuses it.

- Embedding tables (INT8 or INT4): Gather of the stored codes, dequantized after the lookup
  (compress.onnx.embedding).

The float twin is built by compress.onnx.twin. A quantized layer the rewrite cannot express (a
convolution, a weight the exporter folded into another operator) raises Unsupported naming the
operator: no silent float fallback.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from compress.errors import Unsupported
from compress.onnx.twin import Table, Target, Twin, float_twin, layers_used

ACTIVATIONS = ("none", "dynamic", "static")
FORMS = ("qoperator", "qdq")
MS_DOMAIN = "com.microsoft"
ACT_ZERO = 128  # uint8 zero point of the symmetric per-token activation codes
MIN_COSINE_ROUNDED_ACTIVATIONS = 0.99  # export check with quantized activations (see export_quantized_folder)


class _Rewriter:
    """Builds the integer replacement nodes for one graph."""

    def __init__(self, graph, activations: str, form: str = "qoperator"):
        self.graph = graph
        self.activations = activations
        self.form = form
        self.nodes: list = []
        self.inits: list = []
        self.quantized_inputs: dict[str, tuple[str, str]] = {}  # per-token codes and row scales, per input
        self.static_inputs: dict[tuple, str] = {}  # static codes, per input and range
        self.smoothed_inputs: dict[tuple, str] = {}
        self.count = 0

    def fresh(self, stem: str) -> str:
        self.count += 1
        return f"cz_{stem}_{self.count}"

    def const(self, stem: str, array) -> str:
        from onnx import numpy_helper

        name = self.fresh(stem)
        self.inits.append(numpy_helper.from_array(array, name))
        return name

    def node(self, op: str, inputs: list[str], domain: str = "", **attrs) -> str:
        from onnx import helper

        out = self.fresh(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, domain=domain, **attrs))
        return out

    def smoothed(self, x: str, smooth) -> str:
        """`x` times the SmoothQuant factors, built once per tensor and factors (q, k, v share it)."""
        if smooth is None:
            return x
        key = (x, smooth.tobytes())
        if key not in self.smoothed_inputs:
            self.smoothed_inputs[key] = self.node("Mul", [x, self.const("smooth", smooth)])
        return self.smoothed_inputs[key]

    def static_codes(self, x: str, target: Target) -> str:
        """uint8 codes of `x` (smoothed first) with the layer's calibrated per-tensor range.

        The smoothing stays a Mul: folded into QuantizeLinear as a per-channel scale it would be
        exact too, but ONNX Runtime's per-axis QuantizeLinear is ~50x slower than Mul + per-tensor
        QuantizeLinear (measured: 23 ms against 0.45 ms on an 8 x 128 x 384 tensor)."""
        import numpy as np

        smoothed = self.smoothed(x, target.smooth)
        key = (smoothed, target.input_scale, target.input_zero)
        if key not in self.static_inputs:
            scale = self.const("a_scale", np.array(target.input_scale, dtype=np.float32))
            zero = self.const("a_zp", np.array(target.input_zero, dtype=np.uint8))
            self.static_inputs[key] = self.node("QuantizeLinear", [smoothed, scale, zero])
        return self.static_inputs[key]

    def per_token_codes(self, x: str) -> tuple[str, str]:
        """uint8 codes and per-row scales of tensor `x`, built once per tensor."""
        import numpy as np

        if x not in self.quantized_inputs:
            axes = self.const("axes", np.array([-1], dtype=np.int64))
            amax = self.node("ReduceMax", [self.node("Abs", [x]), axes], keepdims=1)
            amax = self.node("Max", [amax, self.const("tiny", np.array(1e-30, dtype=np.float32))])
            scale = self.node("Mul", [amax, self.const("inv127", np.array(1 / 127, dtype=np.float32))])
            scaled = self.node("Div", [x, scale])
            one = self.const("one", np.array(1.0, dtype=np.float32))
            zero = self.const("zp", np.array(ACT_ZERO, dtype=np.uint8))
            codes = self.node("QuantizeLinear", [scaled, one, zero])
            self.quantized_inputs[x] = (codes, scale)
        return self.quantized_inputs[x]

    def matmul(self, x: str, target: Target, output: str) -> None:
        """Nodes computing x @ W^T from the stored integers into `output`."""
        import numpy as np
        from onnx import helper

        qt = target.qt
        if qt.scheme == "int8":
            if self.activations == "none" and self.form == "qdq":
                self.weight_only_matmul(x, target, output)
                return
            if self.activations == "none":
                raise Unsupported(
                    "ONNX integer export: INT8 needs activations 'dynamic' or 'static' here (weight-only "
                    "INT8 has no faster ONNX Runtime kernel than float)."
                )
            if self.activations == "static":
                self.static_matmul(x, target, output)
                return
            codes, row_scale = self.per_token_codes(self.smoothed(x, target.smooth))
            weight = self.const("w_s8", qt.data.numpy().T.copy())  # [in, out]
            w_scale = self.const("w_scale", qt.scale.float().numpy())
            zero = self.const("zp", np.array(ACT_ZERO, dtype=np.uint8))
            # The row scales [..., 1] go in as a_scale: ONNX Runtime broadcasts them over the output
            # inside the kernel (exactly equal to a separate Mul, one pass over the output fewer).
            inputs = [codes, weight, row_scale, w_scale, zero]
            node = helper.make_node(
                "MatMulIntegerToFloat", inputs, [output], name=self.fresh("mmitf"), domain=MS_DOMAIN
            )
            self.nodes.append(node)
            return
        if target.smooth is not None:
            raise Unsupported(f"ONNX integer export: '{target.name}' is INT4 with smoothing factors.")
        rows, cols, group = qt.rows, qt.cols, qt.group_size
        blocks = cols // group
        packed = self.const("w_nbits", qt.data.numpy().reshape(rows, blocks, group // 2))
        scales = self.const("w_nbits_scale", qt.scale.float().numpy().reshape(-1))
        inputs = [x, packed, scales]
        if qt.zero is not None:
            inputs.append(self.const("w_nbits_zero", qt.zero.numpy().reshape(-1)))
        self.nodes.append(
            helper.make_node(
                "MatMulNBits",
                inputs,
                [output],
                name=self.fresh("matmulnbits"),
                domain=MS_DOMAIN,
                K=cols,
                N=rows,
                bits=4,
                block_size=group,
            )
        )

    def weight_only_matmul(self, x: str, target: Target, output: str) -> None:
        """x @ W^T on the stored int8 weight, dequantized in the graph (QDQ form, float activations):
        the compressed-weight pattern OpenVINO reads as an int8 weight (the INT8 layers an INT4 pass
        keeps, compress.passes.quantize keep_int8)."""
        import numpy as np
        from onnx import helper

        qt = target.qt
        if qt.group_size is not None:
            raise Unsupported(
                f"ONNX integer export: '{target.name}' is INT8 in groups; QDQ takes one per row."
            )
        weight = self.const("w_s8", qt.data.numpy().T.copy())  # [in, out]
        w_scale = self.const("w_scale", qt.scale.float().numpy().reshape(-1))
        w_zero = self.const("w_zp", np.zeros(qt.rows, dtype=np.int8))
        dequantized = self.node("DequantizeLinear", [weight, w_scale, w_zero], axis=1)
        self.nodes.append(helper.make_node("MatMul", [x, dequantized], [output], name=self.fresh("mm")))

    def static_matmul(self, x: str, target: Target, output: str) -> None:
        """x @ W^T from the stored int8 weight and the layer's calibrated input range."""
        import numpy as np
        from onnx import helper

        if target.input_scale is None:
            raise Unsupported(
                f"ONNX integer export: '{target.name}' has no calibrated input range (static activations "
                "need one per layer: quantize with --activations static)."
            )
        qt = target.qt
        codes = self.static_codes(x, target)
        a_scale = self.const("a_scale", np.array(target.input_scale, dtype=np.float32))
        a_zero = self.const("a_zp", np.array(target.input_zero, dtype=np.uint8))
        weight = self.const("w_s8", qt.data.numpy().T.copy())  # [in, out]
        w_scale = self.const("w_scale", qt.scale.float().numpy())
        if self.form == "qoperator":
            inputs = [codes, weight, a_scale, w_scale, a_zero]
            node = helper.make_node(
                "MatMulIntegerToFloat", inputs, [output], name=self.fresh("mmitf"), domain=MS_DOMAIN
            )
            self.nodes.append(node)
            return
        # QDQ: ONNX Runtime's optimizer recognises DequantizeLinear -> MatMul <- DequantizeLinear.
        activation = self.node("DequantizeLinear", [codes, a_scale, a_zero])
        w_zero = self.const("w_zp", np.zeros(qt.rows, dtype=np.int8))
        dequantized = self.node("DequantizeLinear", [weight, w_scale, w_zero], axis=1)
        self.nodes.append(
            helper.make_node("MatMul", [activation, dequantized], [output], name=self.fresh("mm"))
        )


def rewrite_graph(model, twin: Twin, activations: str, used: set[str], form: str = "qoperator"):
    """Replace the MatMul/Gemm nodes whose weight is a quantized layer's, and the Gathers that read a
    quantized embedding table; returns the new ModelProto.

    `used`: the weight names the forward pass reaches; each must be rewritten (others, such as BERT's
    pooler under last_hidden_state, are not in the graph at all)."""
    from onnx import helper, numpy_helper

    from compress.onnx.embedding import gather_rows

    graph = model.graph
    matched: dict[str, Target] = {}
    tables: dict[str, Table] = {}
    for init in graph.initializer:
        if init.data_type == 1 and len(init.dims) == 2:  # float32 matrices only
            value = numpy_helper.to_array(init).tobytes()
            if value in twin.linears:
                matched[init.name] = twin.linears[value]
            if value in twin.tables:
                tables[init.name] = twin.tables[value]
    rewriter = _Rewriter(graph, activations, form)
    new_nodes, done = [], set()
    for node in graph.node:
        rewriter.nodes = []
        if node.op_type == "Gather" and node.input[0] in tables:
            gather_rows(rewriter, tables[node.input[0]], node.input[1], node.output[0])
            done.add(tables[node.input[0]].name)
        elif any(i in matched for i in node.input):
            weight = next(i for i in node.input if i in matched)
            _rewrite_linear(rewriter, node, weight, matched[weight])
            done.add(matched[weight].name)
        else:
            rewriter.nodes = [node]
        new_nodes.extend(rewriter.nodes)
    missing = sorted(used - done)
    if missing:
        raise Unsupported(
            f"ONNX integer export: quantized weight '{missing[0]}' is used by the model but no MatMul, Gemm "
            "or Gather in the exported graph holds it (the exporter folded it into another operator)."
        )
    still_used = {i for n in new_nodes for i in n.input}
    kept = [i for i in graph.initializer if i.name not in {*matched, *tables} or i.name in still_used]
    del graph.node[:]
    graph.node.extend(new_nodes)
    del graph.initializer[:]
    graph.initializer.extend(kept + rewriter.inits)
    if not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return model


def _rewrite_linear(rewriter: _Rewriter, node, weight: str, target: Target) -> None:
    """The integer nodes for one MatMul(x, W^T) or Gemm(x, W, transB=1) reading quantized `weight`."""
    from onnx import helper

    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    plain_matmul = node.op_type == "MatMul" and list(node.input).index(weight) == 1 and target.transposed
    plain_gemm = (
        node.op_type == "Gemm"
        and node.input[1] == weight
        and attrs.get("transB", 0) == 1
        and attrs.get("transA", 0) == 0
        and attrs.get("alpha", 1.0) == 1.0
        and attrs.get("beta", 1.0) == 1.0
        and not target.transposed
    )
    if not (plain_matmul or plain_gemm):
        raise Unsupported(
            f"ONNX integer export: the weight of '{target.name}' feeds a {node.op_type} node "
            f"('{node.name}') that has no integer form here (need MatMul(x, W^T) or Gemm(x, W, "
            "transB=1))."
        )
    if plain_gemm and len(node.input) > 2 and node.input[2]:
        product = rewriter.fresh("product")
        rewriter.matmul(node.input[0], target, product)
        add = helper.make_node("Add", [product, node.input[2]], list(node.output), name=rewriter.fresh("a"))
        rewriter.nodes.append(add)
    else:
        rewriter.matmul(node.input[0], target, node.output[0])


def export_integer_onnx(
    module, sample: Any, out_path: str | Path, activations: str = "dynamic", form: str = "qoperator"
):
    """Write an integer-kernel ONNX graph of quantized `module` (called with `sample`) to `out_path`."""
    import onnx

    from compress.checkpoint import atomic_file
    from compress.onnx.export import ONNX_NAME, export_onnx

    if activations not in ACTIVATIONS:
        raise Unsupported(f"ONNX integer export: unknown activations '{activations}'; valid: {ACTIVATIONS}.")
    if form not in FORMS:
        raise Unsupported(f"ONNX integer export: unknown form '{form}'; valid: {FORMS}.")
    twin = float_twin(module)
    used = {f"{n}.weight" for n in layers_used(twin.module, sample, twin.layer_names())}
    with tempfile.TemporaryDirectory(prefix="compress-int-") as tmp:
        exported = export_onnx(twin.module, sample, Path(tmp) / "float")
        model = onnx.load(str(Path(tmp) / "float" / ONNX_NAME))
    model = rewrite_graph(model, twin, activations, used, form)
    with atomic_file(Path(out_path)) as staged:
        onnx.save_model(model, str(staged))
        os.chmod(staged, 0o644)  # readable like the checkpoint beside it (the temporary file is 0600)
    return exported


def activation_mode(module) -> str:
    """How the quantized Linear layers of `module` round their inputs: static, dynamic or none."""
    from compress.qmodules import QuantLinear

    modes = {m.activations for m in module.modules() if isinstance(m, QuantLinear)}
    return next((mode for mode in ("static", "dynamic") if mode in modes), "none")


def export_quantized_folder(
    folder: str | Path, activations: str | None = None, inputs: Any = None, form: str = "qoperator"
):
    """Write `folder/model.onnx` for the quantized checkpoint in `folder` and check it against torch.

    Returns (OnnxExport, ExportCheck). The graph must agree with the torch module, which computes
    the same arithmetic in float (activation rounding included) on samples of several shapes:
    cosine >= 0.999 for weight-only graphs, >= 0.99 with quantized activations. Rounding
    activations makes a deep model chaotic: ONNX Runtime's float ops (softmax, GELU, LayerNorm)
    differ from torch's in the last bit, one code then rounds the other way, and the difference
    grows layer by layer. Measured on MiniLM INT8 dynamic: layer 0 agrees to 5e-6, the output to
    cosine 0.9982. A real arithmetic error is far larger (8-bit weights saturating AVX2's kernel:
    0.966); single layers are checked for exact integer arithmetic in the tests.
    """
    from compress.model import load
    from compress.onnx.check import check_export
    from compress.onnx.export import ONNX_NAME, supplied_onnx
    from compress.onnx.samples import export_samples

    model = load(folder)
    if not model.runnable:
        raise Unsupported(f"{folder}: has no config.json, so there is no model to export to ONNX.")
    if activations is None:
        activations = activation_mode(model.module)
    sample, checks = export_samples(inputs)(model)
    path = Path(folder) / ONNX_NAME
    export_integer_onnx(model.module, sample, path, activations, form)
    try:
        min_cosine = 0.999 if activations == "none" else MIN_COSINE_ROUNDED_ACTIVATIONS
        check = check_export(path, model.module, [sample, *checks], min_cosine=min_cosine)
    except Exception:
        path.unlink(missing_ok=True)
        raise
    return supplied_onnx(Path(folder)), check
