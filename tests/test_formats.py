"""The stored form of quantized weights: packing, codes, scales, dequantization error."""

from __future__ import annotations

import pytest
import torch

from compress.formats.quantized import QuantizedTensor, pack_int4, unpack_int4
from compress.passes.quantize.rtn import quantize_int4, quantize_int8, sqnr_db


@pytest.mark.parametrize("cols", [1, 2, 7, 32, 33])
def test_int4_pack_unpack_round_trip(cols):
    codes = torch.randint(0, 16, (5, cols), dtype=torch.uint8)
    packed = pack_int4(codes)
    assert packed.shape == (5, (cols + 1) // 2)
    assert torch.equal(unpack_int4(packed, cols), codes)


def test_int4_packing_puts_even_column_in_low_nibble():
    packed = pack_int4(torch.tensor([[0x3, 0xA]], dtype=torch.uint8))
    assert packed.item() == 0xA3


def test_int8_error_is_within_half_a_step_per_row():
    w = torch.randn(16, 64) * torch.linspace(0.01, 3, 16)[:, None]
    qt = quantize_int8(w)
    assert qt.data.dtype == torch.int8 and qt.data.abs().max() <= 127
    err = (qt.dequantize() - w).abs()
    assert torch.all(err <= qt.scale[:, None] / 2 + 1e-6)
    assert sqnr_db(w, qt.dequantize()) > 35


@pytest.mark.parametrize("symmetric", [True, False])
def test_int4_error_is_bounded_by_its_group_step(symmetric):
    torch.manual_seed(0)
    w = torch.randn(8, 64)
    qt = quantize_int4(w, 16, symmetric)
    assert qt.data.dtype == torch.uint8 and qt.data.shape == (8, 32)
    assert qt.scale.dtype == torch.float16 and qt.scale.shape == (8, 4)
    assert (qt.zero is None) == symmetric
    err = (qt.dequantize() - w).abs().reshape(8, 4, 16)
    step = qt.scale.float()[:, :, None]
    # half a step, plus the rounding of the scale to float16
    assert torch.all(err <= step * 0.52 + 1e-6)
    assert sqnr_db(w, qt.dequantize()) > 15


def test_asymmetric_int4_represents_a_shifted_range_better_than_symmetric():
    w = torch.rand(4, 64) + 2.0  # all positive: symmetric wastes half its codes
    sym = sqnr_db(w, quantize_int4(w, 32, True).dequantize())
    asym = sqnr_db(w, quantize_int4(w, 32, False).dequantize())
    assert asym > sym + 3


def test_all_zero_group_dequantizes_to_zero():
    w = torch.zeros(2, 32)
    w[1, 16:] = 1.0
    qt = quantize_int4(w, 16, True)
    assert torch.equal(qt.dequantize()[0], torch.zeros(32))


def test_parts_round_trip_and_planned_shapes_match():
    w = torch.randn(6, 4, 3, 3)  # a conv kernel
    for qt in (quantize_int8(w), quantize_int4(w, 36, False)):
        parts = qt.parts("conv.weight")
        planned = QuantizedTensor.planned_parts("conv.weight", qt.meta())
        assert [(n, d, s) for n, d, s in planned] == [(n, t.dtype, tuple(t.shape)) for n, t in parts.items()]
        back = QuantizedTensor.from_parts("conv.weight", parts, qt.meta())
        assert torch.equal(back.dequantize(), qt.dequantize())
        assert back.dequantize().shape == w.shape
