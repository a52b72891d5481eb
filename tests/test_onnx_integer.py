"""Integer-kernel ONNX export of quantized models: INT8 with per-token dynamic activations
(MatMulIntegerToFloat) and INT4 weight-only (MatMulNBits), holding the stored codes exactly."""

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
from compress.errors import BadInput, Unsupported
from compress.onnx import check_export, open_session
from compress.onnx.integer import export_integer_onnx
from compress.qmodules import QuantLinear
from compress.testing import tiny_cnn, tiny_mlp


def quantized(module, **settings):
    return cz.apply(module, cz.Quantize.from_dict(settings)).model.module


def ops(path) -> list[str]:
    return [n.op_type for n in onnx.load(str(path)).graph.node]


def initializers(path) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}


def reference_int8(layer: QuantLinear, x: torch.Tensor) -> torch.Tensor:
    """What the integer graph computes: per-token symmetric 8-bit codes times the stored int8 codes."""
    scale = x.abs().amax(dim=-1, keepdim=True).clamp(min=1e-30) / 127
    codes = torch.round(x / scale).clamp(-128, 127)
    qt = layer.qweight
    out = (codes.double() @ qt.data.double().T) * qt.scale.double() * scale.double()
    return (out + layer.bias.double()).float()


def test_int8_dynamic_graph_uses_integer_kernels_and_the_stored_codes(tmp_path):
    model = quantized(tiny_mlp(), scheme="int8", activations="dynamic")
    path = tmp_path / "model.onnx"
    export_integer_onnx(model, torch.randn(4, 32), path, "dynamic")
    kinds = ops(path)
    assert kinds.count("MatMulIntegerToFloat") == 3 and "MatMul" not in kinds and "Gemm" not in kinds
    stored = sorted(m.weight.numpy().T.tobytes() for m in model.modules() if isinstance(m, QuantLinear))
    in_graph = sorted(a.tobytes() for a in initializers(path).values() if a.dtype == np.int8)
    assert in_graph == stored  # exactly the checkpoint's integers, nothing re-quantized
    # torch's QuantLinear quantizes its inputs per token too, so both compute the same numbers.
    assert all(m.activations == "dynamic" for m in model.modules() if isinstance(m, QuantLinear))
    check_export(path, model, [torch.randn(3, 32), torch.randn(9, 32)], atol=1e-5, rtol=1e-5)


def test_int8_dynamic_matches_the_integer_arithmetic_exactly_with_7_bit_weights(tmp_path):
    layer_model = nn.Sequential(nn.Linear(64, 16))
    model = quantized(layer_model, scheme="int8", activations="dynamic", weight_bits=7)
    assert model[0].weight.abs().max() <= 63
    path = tmp_path / "model.onnx"
    export_integer_onnx(model, torch.randn(2, 64), path, "dynamic")
    x = torch.randn(5, 64) * torch.linspace(0.1, 20, 64)  # an outlier-heavy input
    got = torch.from_numpy(open_session(path).run(None, {"input": x.numpy()})[0])
    torch.testing.assert_close(got, reference_int8(model[0], x), rtol=1e-5, atol=1e-5)


def test_the_default_weight_bits_follow_the_cpu(monkeypatch):
    """7-bit codes only where the u8 x s8 kernel saturates (x86 without VNNI or AMX), 8 elsewhere."""
    import dataclasses

    import compress.hardware as hardware
    from compress.passes.quantize.config import Int8Config

    real = hardware.detect()
    for features, bits in ((frozenset({"avx2"}), 7), (frozenset({"avx2", "avx512_vnni"}), 8)):
        cpu = dataclasses.replace(real.cpu, arch="x86_64", features=features)
        monkeypatch.setattr(hardware, "detect", lambda cpu=cpu: dataclasses.replace(real, cpu=cpu))
        assert Int8Config(activations="dynamic").resolve().weight_bits == bits
        weight_only = Int8Config()
        assert weight_only.resolve() == weight_only and weight_only.int8_bits == 8  # no codes to saturate
        assert Int8Config(activations="dynamic", weight_bits=8).resolve().weight_bits == 8


def test_layers_reading_one_tensor_share_one_activation_quantization(tmp_path):
    class Fork(nn.Module):
        def __init__(self):
            super().__init__()
            self.q, self.k, self.v = (nn.Linear(32, 32) for _ in range(3))

        def forward(self, x):
            return self.q(x) + self.k(x) * self.v(x)

    model = quantized(Fork().eval(), scheme="int8", activations="dynamic")
    path = tmp_path / "model.onnx"
    export_integer_onnx(model, torch.randn(2, 5, 32), path, "dynamic")
    kinds = ops(path)
    assert kinds.count("MatMulIntegerToFloat") == 3 and kinds.count("QuantizeLinear") == 1


def test_int4_graph_is_matmulnbits_with_the_packed_codes(tmp_path):
    for symmetric in (True, False):
        model = quantized(tiny_mlp(), scheme="int4", group_size=16, symmetric=symmetric)
        path = tmp_path / f"model-{symmetric}.onnx"
        export_integer_onnx(model, torch.randn(4, 32), path, "none")
        kinds = ops(path)
        assert kinds.count("MatMulNBits") == 3 and "MatMul" not in kinds and "Gemm" not in kinds
        layers = [m for m in model.modules() if isinstance(m, QuantLinear)]
        packed = sorted(a.tobytes() for a in initializers(path).values() if a.dtype == np.uint8)
        expected = [m.weight.numpy().tobytes() for m in layers]
        expected += [m.weight_zero.numpy().tobytes() for m in layers if m.weight_zero is not None]
        assert packed == sorted(expected)
        # Weight-only: ONNX Runtime agrees with torch's dequantized weights to float rounding.
        check_export(path, model, [torch.randn(3, 32), torch.randn(8, 32)], atol=1e-4, rtol=1e-4)


def test_int4_on_a_transformer_runs_and_agrees(tiny_bert, tmp_path):
    model = cz.load(tiny_bert)
    q = quantized(model.module, scheme="int4", group_size=16)
    ids = torch.randint(5, 60, (2, 11))
    sample = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    path = tmp_path / "model.onnx"
    export_integer_onnx(q, sample, path, "none")
    assert "MatMulNBits" in ops(path) and "MatMul" in ops(path)  # attention scores stay float
    other = torch.randint(5, 60, (3, 7))
    check_export(path, q, [sample, {"input_ids": other, "attention_mask": torch.ones_like(other)}])


def test_unsupported_operator_is_a_clear_error(tmp_path):
    model = quantized(tiny_cnn(), scheme="int8", activations="dynamic", targets={"types": ["conv", "linear"]})
    with pytest.raises(Unsupported, match=r"conv1.*QuantConv \(ONNX operator Conv\)"):
        export_integer_onnx(model, torch.randn(2, 1, 16, 16), tmp_path / "m.onnx", "dynamic")
    assert not (tmp_path / "m.onnx").exists()


def test_int8_without_dynamic_activations_is_refused(tmp_path):
    model = quantized(tiny_mlp(), scheme="int8")
    with pytest.raises(Unsupported, match="activations 'dynamic' or 'static'"):
        export_integer_onnx(model, torch.randn(2, 32), tmp_path / "m.onnx", "none")


def test_activation_settings_are_checked():
    with pytest.raises(BadInput, match="needs scheme int8"):
        cz.Quantize.from_dict({"scheme": "int4", "activations": "dynamic"})
    with pytest.raises(BadInput, match="weight_bits"):
        cz.Quantize.from_dict({"scheme": "int8", "weight_bits": 6})
    with pytest.raises(BadInput, match="unknown value 'per-row'"):
        cz.Quantize.from_dict({"activations": "per-row"})


def test_cli_writes_the_integer_graph_and_the_evaluator_runs_it(tiny_bert, tmp_path):
    out = tmp_path / "int8"
    args = ["quantize", str(tiny_bert), "--activations", "dynamic", "--export", "onnx", "-o", str(out)]
    result = CliRunner().invoke(main, [*args, "--no-eval", "-q"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "MatMulIntegerToFloat" in ops(out / "model.onnx")
    info = cz.load(out).compression
    from compress.hardware import detect

    expected_bits = 7 if detect().cpu.int8_saturates else 8  # resolved for this CPU, and recorded
    assert info.recipe[0]["activations"] == "dynamic" and info.recipe[0]["weight_bits"] == expected_bits
    layers = [m for m in cz.load(out).module.modules() if isinstance(m, QuantLinear)]
    assert layers and all(m.activations == "dynamic" for m in layers)  # the loader restores it
    report = cz.evaluate(
        out,
        tiny_bert,
        task="fidelity",
        runtimes=("onnxruntime",),
        devices=("cpu",),
        latency=cz.LatencySettings(
            batch_size=2, seq_len=16, warmup=1, min_rounds=2, max_rounds=3, budget_s=0.1
        ),
    )
    row = next(r for r in report.latency if r["runtime"] == "onnxruntime")
    assert row["status"] == "ok" and row["onnx"]["candidate"]["source"] == "supplied"
    assert row["onnx"]["baseline"]["source"] == "exported"


def test_cli_export_failure_leaves_nothing(tiny_bert, tmp_path, monkeypatch):
    # An export whose check fails (here: a cosine no graph can reach) writes neither file.
    monkeypatch.setattr("compress.onnx.integer.MIN_COSINE_ROUNDED_ACTIVATIONS", 1.01)
    out = tmp_path / "int8"
    args = ["quantize", str(tiny_bert), "--activations", "dynamic", "--export", "onnx"]
    result = CliRunner().invoke(main, [*args, "-o", str(out), "--no-eval", "-q"])
    assert result.exit_code == 2 and "at least 1.01 needed" in result.output
    assert not out.exists()


def test_cli_int8_export_without_dynamic_activations_is_refused_up_front(tiny_bert, tmp_path):
    out = tmp_path / "int8"
    args = ["quantize", str(tiny_bert), "--export", "onnx", "-o", str(out), "--no-eval", "-q"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and "needs activations dynamic or static" in result.output
    assert not out.exists()
