"""compress.kernels: CPU batches take the dequantize path and decoding-sized inputs torch's weight-only
kernels with bfloat16 activations (equal within bfloat16 rounding), the integer math is right (checked
on CPU with torch's CPU kernels), and CUDA-only paths run only where a GPU is present."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from compress import kernels, qmodules
from compress.formats.quantized import QuantizedTensor
from compress.passes.quantize.rtn import quantize_int4, quantize_int8
from compress.qmodules import QuantLinear, per_token_fake_quant

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: CPU fallback only")


def _weight(n: int = 48, k: int = 128, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, k, generator=torch.Generator().manual_seed(seed)) / k**0.5


def _layer(qt: QuantizedTensor, activations: str = "none", bias: bool = True) -> QuantLinear:
    n = qt.shape[0]
    layer = QuantLinear(qt, torch.linspace(-0.1, 0.1, n) if bias else None)
    layer.activations = activations
    return layer


def _assert_bf16_close(out: torch.Tensor, reference: torch.Tensor) -> None:
    """Equal within bfloat16 rounding of the activations, scales and outputs (8 significant bits):
    measured ~0.4% of the largest output; float32 kernels would be ~1e-6."""
    assert out.dtype == reference.dtype and out.shape == reference.shape
    error = ((out.float() - reference.float()).abs().max() / reference.float().abs().max()).item()
    assert error < 1.5e-2, f"largest difference {error:.2e} of the largest output"


def _reference(layer: QuantLinear, x: torch.Tensor) -> torch.Tensor:
    """What QuantLinear computed before compress.kernels existed."""
    if layer.activations == "dynamic":
        x = per_token_fake_quant(x)
    return F.linear(x, layer.qweight.dequantize(x.dtype), layer.bias)


@pytest.mark.parametrize(
    "qt, activations",
    [
        (quantize_int8(_weight()), "none"),
        (quantize_int8(_weight()), "dynamic"),
        (quantize_int4(_weight(), 32, symmetric=False), "none"),
        (quantize_int4(_weight(), 64, symmetric=True), "none"),
    ],
    ids=["int8", "int8-dynamic", "int4-asym", "int4-sym"],
)
def test_cpu_batches_run_exactly_the_dequantize_path(qt, activations):
    layer = _layer(qt, activations)
    x = torch.randn(2, max(kernels.CPU_MAX_ROWS.values()), 128)  # more rows than CPU integer kernels take
    assert torch.equal(layer(x), _reference(layer, x))
    assert layer.kernel.name == kernels.DEQUANTIZE and "CPU" in layer.kernel.reason
    assert qmodules.kernels_ran(torch.nn.Sequential(layer)) == {kernels.DEQUANTIZE: 1}


@pytest.mark.parametrize(
    "qt, expected",
    [
        (quantize_int8(_weight()), kernels.INT8_WEIGHT_ONLY),
        (quantize_int4(_weight(), 32, symmetric=False), kernels.INT4_TINYGEMM_CPU),
        (quantize_int4(_weight(), 128, symmetric=True), kernels.INT4_TINYGEMM_CPU),
    ],
    ids=["int8", "int4-asym", "int4-sym"],
)
def test_cpu_decoding_rows_run_weight_only_integer_kernels(qt, expected):
    layer = _layer(qt)
    for rows in (1, kernels.CPU_MAX_ROWS[qt.scheme]):
        x = torch.randn(1, 128, rows).transpose(1, 2)  # strided, as a transposed activation arrives
        out = layer(x)
        assert layer.kernel.name == expected and "bfloat16 activations" in layer.kernel.reason
        _assert_bf16_close(out, _reference(layer, x))
    assert qmodules.kernels(torch.nn.Sequential(layer)) == {"0": layer.kernel}


@pytest.mark.parametrize(
    "qt", [quantize_int8(_weight()), quantize_int4(_weight(), 32, symmetric=False)], ids=["int8", "int4"]
)
def test_cpu_kernels_take_bfloat16_inputs_and_unaligned_views(qt):
    layer = _layer(qt)
    x = torch.randn(3, 128, dtype=torch.bfloat16)
    out = layer(x)
    assert out.dtype == torch.bfloat16 and layer.kernel.name != kernels.DEQUANTIZE
    _assert_bf16_close(out, _reference(layer, x.float()).to(torch.bfloat16))
    storage = torch.randn(3 * 128 + 1, dtype=torch.bfloat16)
    view = storage[1:].view(3, 128)  # contiguous, but 2 bytes past an aligned address
    assert view.data_ptr() % 64 and view.is_contiguous()
    _assert_bf16_close(layer(view), _reference(layer, view.float()).to(torch.bfloat16))


def test_a_float16_model_and_odd_int8_widths_dequantize_with_a_reason():
    half = _layer(quantize_int8(_weight())).to(torch.float16)
    x = torch.randn(2, 128, dtype=torch.float16)
    assert torch.equal(half(x), _reference(half, x))
    assert half.kernel.name == kernels.DEQUANTIZE and "float16" in half.kernel.reason
    odd = _layer(quantize_int8(_weight(k=40)))  # the int8 kernel reads 16 inputs at a time
    x = torch.randn(2, 40)
    assert torch.equal(odd(x), _reference(odd, x))
    assert odd.kernel.name == kernels.DEQUANTIZE and "multiple of 16" in odd.kernel.reason


def test_cpu_dynamic_activations_and_odd_shapes_dequantize_with_a_reason():
    dynamic = _layer(quantize_int8(_weight()), "dynamic")
    x = torch.randn(3, 128)
    assert torch.equal(dynamic(x), _reference(dynamic, x))
    assert dynamic.kernel.name == kernels.DEQUANTIZE and "_int_mm" in dynamic.kernel.reason
    odd = _layer(quantize_int4(_weight(n=40), 32, symmetric=True))  # 40 outputs: not a multiple of 16
    assert torch.equal(odd(x), _reference(odd, x))
    assert "multiple of 16" in odd.kernel.reason


def test_inputs_that_need_gradients_take_the_differentiable_path():
    layer = _layer(quantize_int4(_weight(), 32, symmetric=False))
    x = torch.randn(2, 128, requires_grad=True)
    layer(x).sum().backward()
    assert layer.kernel.name == kernels.DEQUANTIZE and x.grad is not None


def test_plan_is_cached_on_the_module_not_in_the_state_dict():
    layer = _layer(quantize_int8(_weight()))
    keys = set(layer.state_dict())
    layer(torch.randn(3, 128))
    assert set(layer.state_dict()) == keys
    assert len(layer._kernel_plans) == 1
    layer.weight = layer.weight.clone()  # as .to(device) does: the old plan is dropped
    layer(torch.randn(3, 128))
    assert len(layer._kernel_plans) == 1


def test_tracing_runs_the_dequantize_path():
    layer = _layer(quantize_int8(_weight()))
    x = torch.randn(4, 128)  # few rows: outside a trace, this would run torch._weight_int8pack_mm
    traced = torch.jit.trace(layer, x, check_trace=False)  # a check re-runs it untraced
    assert layer.kernel.name == kernels.DEQUANTIZE and "tracing" in layer.kernel.reason
    assert torch.equal(traced(x), _reference(layer, x))


def _unpack_tinygemm(packed: torch.Tensor) -> torch.Tensor:
    """tinygemm's uint8 layout: the even column in the high nibble."""
    return torch.stack([packed >> 4, packed & 0x0F], dim=-1).reshape(packed.shape[0], -1)


@pytest.mark.parametrize("group, symmetric", [(32, False), (128, True), (64, False)])
def test_int4_conversion_reproduces_the_dequantized_weight(group, symmetric):
    qt = quantize_int4(_weight(k=256), group, symmetric=symmetric)
    codes = _unpack_tinygemm(kernels.tinygemm_uint8_codes(qt))
    assert torch.equal(codes, qt.codes())
    sz = kernels.tinygemm_scales_and_zeros(qt, torch.float32)
    assert sz.shape == (qt.groups, qt.rows, 2)
    rebuilt = kernels.tinygemm_dequantize(codes, sz, group)
    torch.testing.assert_close(rebuilt, qt.dequantize(torch.float32), rtol=0, atol=1e-6)


def test_cpu_int4_kernel_matches_linear_on_the_dequantized_weight():
    qt = quantize_int4(_weight(k=256), 32, symmetric=False)
    packed, sz = kernels.cpu_int4_pack(qt)
    x = torch.randn(5, 256)
    out = torch._weight_int4pack_mm_for_cpu(x, packed, 32, sz)  # float32: exact, but a scalar loop
    torch.testing.assert_close(out, F.linear(x, qt.dequantize(torch.float32)), rtol=1e-5, atol=1e-5)
    packed, sz = kernels.cpu_int4_pack(qt, torch.bfloat16)  # what compress runs: vectorised
    out = torch._weight_int4pack_mm_for_cpu(x.to(torch.bfloat16), packed, 32, sz)
    _assert_bf16_close(out.float(), F.linear(x, qt.dequantize(torch.float32)))


def test_int8_integer_math_equals_the_fake_quant_path():
    qt = quantize_int8(_weight(n=24, k=64))
    layer = _layer(qt, "dynamic")
    x = torch.randn(32, 64) * torch.linspace(0.1, 3, 32)[:, None]
    codes, scale = kernels.per_token_codes(x)
    assert torch.equal(codes.float() * scale, per_token_fake_quant(x))
    out = kernels.int8_dynamic_matmul(x, qt.data.t(), qt.scale, layer.bias)  # torch._int_mm on CPU
    torch.testing.assert_close(out, _reference(layer, x), rtol=1e-5, atol=1e-5)


def test_cuda_choices_name_why_a_kernel_is_unavailable():
    """The CUDA planner on CPU tensors: shapes and group sizes tinygemm or _int_mm cannot take."""
    odd = _layer(quantize_int8(_weight(n=20, k=12)), "dynamic")
    plan = kernels._plan_cuda(odd, torch.float32)
    assert plan.kernel.name == kernels.DEQUANTIZE and "multiple of 8" in plan.kernel.reason
    small_group = _layer(quantize_int4(_weight(k=128), 16, symmetric=True))
    plan = kernels._plan_cuda(small_group, torch.bfloat16)
    assert plan.kernel.name == kernels.DEQUANTIZE and "group size 16" in plan.kernel.reason
    ok = _layer(quantize_int8(_weight()), "dynamic")
    assert kernels._plan_cuda(ok, torch.float32).kernel.name == kernels.INT8_DYNAMIC


@needs_cuda
@pytest.mark.parametrize(
    "qt, activations, dtype, expected",
    [
        (quantize_int8(_weight(n=64, k=256)), "dynamic", torch.float32, kernels.INT8_DYNAMIC),
        (
            quantize_int4(_weight(n=64, k=256), 32, symmetric=False),
            "none",
            torch.bfloat16,
            kernels.INT4_TINYGEMM,
        ),
        (quantize_int8(_weight(n=64, k=256)), "none", torch.bfloat16, kernels.INT8_WEIGHT_ONLY),
    ],
)
def test_cuda_integer_kernels_agree_with_the_dequantize_path(qt, activations, dtype, expected):
    layer = _layer(qt, activations).cuda()
    x = torch.randn(64, 256, device="cuda", dtype=dtype)
    out = layer(x)
    # On a GPU the kernel must be picked: falling back to dequantize is a failure, never a skip.
    assert layer.kernel.name == expected, f"{expected} not picked on this GPU: {layer.kernel.reason}"
    assert kernels.kernels_ran(torch.nn.Sequential(layer)) == {expected: 1}
    reference = _reference(layer, x.float())
    cosine = F.cosine_similarity(out.float().flatten(), reference.flatten(), dim=0)
    assert cosine > 0.999


@pytest.mark.parametrize("rows, expected", [(4, kernels.INT8_WEIGHT_ONLY), (128, kernels.DEQUANTIZE)])
def test_the_torch_latency_row_names_the_kernels_that_ran(rows, expected):
    import compress as cz
    from compress.eval.latency import LatencySettings
    from compress.testing import tiny_mlp

    mlp = tiny_mlp()
    art = cz.quantize(mlp, scheme="int8")
    quick = LatencySettings(warmup=1, min_rounds=3, max_rounds=6, budget_s=0.2)
    x = torch.randn(rows, 32)
    report = cz.evaluate(art, mlp, inputs=x, devices=("cpu",), runtimes=("torch",), latency=quick)
    ran = report.latency[0]["torch_kernels"]
    assert set(ran) == {expected} and ran[expected] >= 2
    assert (expected in report.to_markdown()) == (expected != kernels.DEQUANTIZE)
    assert report.accuracy.value > 0.999


def test_flops_count_the_integer_kernels_as_their_float_matmul():
    from compress.eval.flops import count_flops

    layer = _layer(quantize_int4(_weight(), 32, symmetric=False))
    x = torch.randn(3, 128)
    assert count_flops(layer, x) == 2 * 3 * 128 * 48
    assert layer.kernel.name == kernels.INT4_TINYGEMM_CPU
