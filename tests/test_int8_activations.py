"""INT8 with calibrated activations: static ranges and SmoothQuant factors, in torch and in the
integer ONNX export (QOperator and QDQ forms)."""

from __future__ import annotations

import onnx
import pytest
import torch
from click.testing import CliRunner
from torch import nn

import compress as cz
from compress.cli import main
from compress.errors import BadInput
from compress.onnx import check_export, open_session
from compress.onnx.integer import export_integer_onnx
from compress.qmodules import QuantLinear
from compress.testing import correlated_inputs, tiny_norm_mlp


@pytest.fixture
def calib_text(tmp_path):
    path = tmp_path / "calib.txt"
    path.write_text(" ".join(["the team will send the report by email today, please check the list"] * 40))
    return str(path)


def calibration(n: int = 128) -> list[torch.Tensor]:
    return list(outlier_inputs(n, seed=1).split(32))


def outlier_inputs(n: int, seed: int) -> torch.Tensor:
    """Correlated inputs with a few channels 30x larger, as in transformer activations."""
    x = correlated_inputs(n, seed=seed)
    x[:, :3] *= 30.0
    return x


def quantized(model: nn.Module, **settings) -> nn.Module:
    return cz.quantize(model, "int8", data=calibration(), **settings).model.module


def ops(path) -> list[str]:
    return [n.op_type for n in onnx.load(str(path)).graph.node]


def layers(model: nn.Module) -> list[QuantLinear]:
    return [m for m in model.modules() if isinstance(m, QuantLinear)]


def test_static_layers_carry_a_calibrated_range_and_smoothing_by_default():
    model = quantized(tiny_norm_mlp(), activations="static")
    for layer in layers(model):
        assert layer.activations == "static"
        assert layer.input_scale.numel() == 1 and 0 <= int(layer.input_zero) <= 255
        assert layer.input_smooth.shape == (layer.in_features,)  # smoothing on by default with static
    first = layers(model)[0]
    assert float(first.input_smooth[:3].max()) < float(first.input_smooth[3:].min())  # outliers scaled down


def test_smoothing_keeps_the_float_product_and_lowers_the_quantization_error():
    reference = tiny_norm_mlp()
    x = outlier_inputs(256, seed=2)
    with torch.no_grad():
        expected = reference(x)
        errors = {}
        for alpha in (0.0, 0.5):
            model = quantized(tiny_norm_mlp(), activations="dynamic", smooth=alpha)
            errors[alpha] = float((model(x) - expected).pow(2).mean())
    assert errors[0.5] < 0.5 * errors[0.0]


@pytest.mark.parametrize("form", ["qoperator", "qdq"])
def test_static_export_agrees_with_torch_and_holds_the_stored_codes(tmp_path, form):
    model = quantized(tiny_norm_mlp(), activations="static")
    path = tmp_path / "model.onnx"
    export_integer_onnx(model, torch.randn(4, 64), path, "static", form)
    kinds = ops(path)
    assert kinds.count("QuantizeLinear") == 2  # one per layer input; no per-token subgraph
    assert "ReduceMax" not in kinds and kinds.count("Mul") == 2  # the smoothing, then fixed ranges
    if form == "qoperator":
        assert kinds.count("MatMulIntegerToFloat") == 2 and "MatMul" not in kinds
    else:
        assert kinds.count("DequantizeLinear") == 4 and kinds.count("MatMul") == 2
    samples = [outlier_inputs(8, seed=3), outlier_inputs(3, seed=4)]
    if form == "qoperator":
        check_export(path, model, samples, atol=1e-4, rtol=1e-4)
    else:  # ONNX Runtime rewrites QDQ graphs with its own kernels (a code can round the other way)
        check_export(path, model, samples, min_cosine=0.9999)


def test_static_matches_the_integer_arithmetic_exactly(tmp_path):
    model = quantized(nn.Sequential(nn.Linear(64, 16)), activations="static", smooth=0)
    layer = layers(model)[0]
    assert layer.input_smooth is None
    path = tmp_path / "model.onnx"
    export_integer_onnx(model, torch.randn(2, 64), path, "static")
    x = outlier_inputs(5, seed=5)
    got = torch.from_numpy(open_session(path).run(None, {"input": x.numpy()})[0])
    scale, zero = layer.input_scale.double(), layer.input_zero.double()
    codes = torch.clamp(torch.round(x.double() / scale) + zero, 0, 255) - zero
    qt = layer.qweight
    want = (codes @ qt.data.double().T) * qt.scale.double() * scale + layer.bias.double()
    torch.testing.assert_close(got, want.float(), rtol=1e-5, atol=1e-4)


def test_dynamic_smoothing_exports_one_mul_per_shared_input(tmp_path):
    class Fork(nn.Module):
        def __init__(self):
            super().__init__()
            self.q, self.k, self.v = (nn.Linear(64, 32) for _ in range(3))

        def forward(self, x):
            return self.q(x) + self.k(x) * self.v(x)

    model = quantized(Fork().eval(), activations="dynamic", smooth=0.5)
    smooths = [layer.input_smooth for layer in layers(model)]
    assert all(torch.equal(s, smooths[0]) for s in smooths)  # q, k and v share one factor
    path = tmp_path / "model.onnx"
    export_integer_onnx(model, torch.randn(2, 5, 64), path, "dynamic")
    kinds = ops(path)
    assert kinds.count("QuantizeLinear") == 1 and kinds.count("MatMulIntegerToFloat") == 3
    check_export(path, model, [outlier_inputs(20, seed=6).reshape(4, 5, 64)], atol=1e-4, rtol=1e-4)


def test_settings_are_checked():
    with pytest.raises(BadInput, match=r"quantize\.smooth"):
        cz.Quantize.from_dict({"smooth": 0.5})  # weight-only: nothing to smooth
    with pytest.raises(BadInput, match=r"quantize\.smooth"):
        cz.Quantize.from_dict({"activations": "dynamic", "smooth": 1.5})
    with pytest.raises(BadInput, match="needs scheme int8"):
        cz.Quantize.from_dict({"scheme": "int4", "activations": "static"})
    with pytest.raises(BadInput, match="calibration"):
        cz.quantize(tiny_norm_mlp(), "int8", activations="static")


def test_cli_static_writes_a_checkpoint_that_loads_back_static(tiny_bert, tmp_path, calib_text):
    out = tmp_path / "static"
    args = ["quantize", str(tiny_bert), "--activations", "static", "--calib", str(calib_text)]
    args += ["--calib-samples", "4", "--calib-seq-len", "16", "--export", "onnx", "-o", str(out)]
    result = CliRunner().invoke(main, [*args, "--no-eval", "-q"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "MatMulIntegerToFloat" in ops(out / "model.onnx")
    loaded = layers(cz.load(out).module)
    assert loaded and all(m.activations == "static" and m.input_scale is not None for m in loaded)
    assert all(m.input_smooth is not None for m in loaded)
    recipe = cz.load(out).compression.recipe[0]
    assert recipe["activations"] == "static" and recipe["calibration"]["samples"] == 4


def test_cli_smoothing_without_quantized_activations_is_refused(tiny_bert, tmp_path):
    out = tmp_path / "static"
    args = ["quantize", str(tiny_bert), "--smooth", "0.5", "-o", str(out), "--no-eval", "-q"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and "quantize.smooth" in result.output
    assert not out.exists()
