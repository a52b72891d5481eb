"""Quantized embedding tables in the integer ONNX graph: the stored codes, gathered, then rescaled
exactly as compress's QuantEmbedding does (in ONNX Runtime and in OpenVINO)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from onnx import numpy_helper
from torch import nn

import compress as cz
from compress.cli import main
from compress.onnx import open_session
from compress.onnx.integer import export_integer_onnx
from compress.openvino import compile_model
from compress.qmodules import QuantEmbedding


class Lookup(nn.Module):
    def __init__(self):
        super().__init__()
        self.table = nn.Embedding(300, 96)

    def forward(self, ids):
        return self.table(ids)


@pytest.mark.parametrize(
    "settings",
    [
        {"scheme": "int8"},
        {"scheme": "int4", "group_size": 32},
        {"scheme": "int4", "group_size": 32, "symmetric": False},  # 3 groups: a padding nibble
        {"scheme": "int4", "group_size": 16, "symmetric": False},
    ],
    ids=["int8", "int4-sym", "int4-asym-odd-groups", "int4-asym"],
)
def test_quantized_lookup_equals_torch_exactly(tmp_path, settings):
    torch.manual_seed(0)
    targets = {"types": ["embedding"]}
    model = cz.apply(Lookup().eval(), cz.Quantize.from_dict({**settings, "targets": targets})).model.module
    assert isinstance(model.table, QuantEmbedding)
    path = tmp_path / "model.onnx"
    export_integer_onnx(model, torch.randint(0, 300, (2, 5)), path, "none")
    inits = onnx.load(str(path)).graph.initializer
    assert not [i for i in inits if i.data_type == onnx.TensorProto.FLOAT and list(i.dims) == [300, 96]]
    assert [
        i
        for i in inits
        if i.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8) and i.dims[:1] == [300]
    ]
    ids = torch.randint(0, 300, (4, 17))  # other shapes than the export's
    with torch.inference_mode():
        want = model(ids)
    got = open_session(path).run(None, {"input": ids.numpy()})[0]
    assert torch.equal(torch.from_numpy(got), want)
    ov_got = compile_model(str(path)).create_infer_request().infer({"input": ids.numpy()})[0]
    assert torch.equal(torch.from_numpy(np.array(ov_got)), want)


def test_int8_table_holds_the_stored_codes(tmp_path):
    model = cz.apply(
        Lookup().eval(), cz.Quantize.from_dict({"targets": {"types": ["embedding"]}})
    ).model.module
    path = tmp_path / "model.onnx"
    export_integer_onnx(model, torch.randint(0, 300, (2, 5)), path, "none")
    arrays = [numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer]
    codes = [a for a in arrays if a.dtype == np.int8]
    assert len(codes) == 1 and np.array_equal(codes[0], model.table.weight.numpy())


def test_cli_static_export_with_embeddings_shrinks_the_graph(tiny_bert, tmp_path):
    calib = tmp_path / "calib.txt"
    calib.write_text(" ".join(["the team will send the report by email today, please check the list"] * 40))
    sizes = {}
    for name, extra in (("linear", []), ("embeddings", ["--embeddings"])):
        out = tmp_path / name
        args = ["quantize", str(tiny_bert), "--activations", "static", "--onnx-format", "qdq", *extra]
        args += ["--calib", str(calib), "--calib-samples", "4", "--calib-seq-len", "16"]
        result = CliRunner().invoke(main, [*args, "--export", "onnx", "-o", str(out), "--no-eval", "-q"])
        assert result.exit_code == 0, result.output
        sizes[name] = (out / "model.onnx").stat().st_size
        graph = onnx.load(str(out / "model.onnx")).graph
        float_tables = [
            i for i in graph.initializer if i.data_type == onnx.TensorProto.FLOAT and i.dims == [115, 64]
        ]
        assert bool(float_tables) == (name == "linear")  # the 115-word table stays float without --embeddings
    # The word, position and token-type tables (115 + 160 + 2 rows of 64) go from 4 bytes a value to 1.
    assert sizes["linear"] - sizes["embeddings"] > 0.7 * (115 + 160 + 2) * 64 * 3
