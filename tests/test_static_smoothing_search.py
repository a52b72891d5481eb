"""Static INT8's SmoothQuant strength searched per input tensor (smooth "auto", the default with
static activations): the search must pick, for every layer, the alpha whose quantized layer (as the
pass really builds it) reproduces the float layer best on the calibration inputs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import compress as cz
from compress.calibration import CalibrationData
from compress.errors import BadInput
from compress.passes.quantize import activation_ranges
from compress.passes.quantize.activation_ranges import (
    ALPHA_GRID,
    AUTO,
    MAX_FACTOR,
    InputRange,
    measure_input_ranges,
    smooth_weights,
    smoothing_factor,
)
from compress.qmodules import QuantLinear
from compress.testing import correlated_inputs, tiny_norm_mlp


def calibration() -> list[torch.Tensor]:
    x = correlated_inputs(128, seed=1)
    x[:, :3] *= 30.0  # a few outlier channels, as in transformer activations
    return list(x.split(32))


def float_inputs(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The input each Linear of the float model sees for `x`, by layer name."""
    seen: dict[str, torch.Tensor] = {}
    hooks = [
        m.register_forward_pre_hook(lambda _m, a, n=n: seen.__setitem__(n, a[0].detach()))
        for n, m in model.named_modules()
        if isinstance(m, nn.Linear)
    ]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return seen


def quantized(**settings):
    settings.setdefault("bias_correction", False)  # the search judges the layers before the correction
    return cz.quantize(tiny_norm_mlp(), "int8", activations="static", data=calibration(), **settings)


def test_the_searched_alpha_is_the_one_whose_quantized_layer_errs_least():
    reference = tiny_norm_mlp()
    inputs = float_inputs(reference, torch.cat(calibration()))
    searched = quantized()
    fixed = {alpha: quantized(smooth=alpha).model.module for alpha in ALPHA_GRID}
    for name, x in inputs.items():
        want = reference.get_submodule(name)(x)
        errors = {}
        for alpha, module in fixed.items():
            with torch.no_grad():
                errors[alpha] = float((module.get_submodule(name)(x) - want).pow(2).mean())
        best = min(errors, key=errors.__getitem__)
        assert searched.changes[f"{name}.weight"]["smooth_alpha"] == best
        layer, twin = searched.model.module.get_submodule(name), fixed[best].get_submodule(name)
        assert isinstance(layer, QuantLinear) and layer.activations == "static"
        for part in ("weight", "weight_scale", "input_smooth", "input_scale", "input_zero"):
            torch.testing.assert_close(getattr(layer, part), getattr(twin, part), rtol=0, atol=0)
        assert errors[best] <= errors[0.5]  # never worse than the fixed strength it replaced
    assert max(errors.values()) > 1.2 * min(errors.values())  # the choice matters on this layer


def test_a_given_alpha_is_used_as_it_is():
    result = quantized(smooth=0.6)
    alphas = {r["smooth_alpha"] for r in result.changes.values() if "smooth_alpha" in r}
    assert alphas == {0.6}


def test_smoothing_strength_defaults_to_the_search_for_static_activations_only():
    assert cz.Quantize(scheme="int8", activations="static").smooth_alpha == AUTO
    assert cz.Quantize(scheme="int8", activations="dynamic").smooth_alpha is None
    assert cz.Quantize(scheme="int8", activations="static", smooth=0).smooth_alpha is None  # 0: off
    assert cz.Quantize(scheme="int8", activations="dynamic", smooth=0.5).smooth_alpha == 0.5
    assert cz.Quantize.from_dict({"activations": "static", "smooth": "auto"}).smooth_alpha == AUTO
    with pytest.raises(BadInput, match="static"):
        cz.Quantize(scheme="int8", activations="dynamic", smooth="auto")
    with pytest.raises(BadInput, match=r"quantize\.smooth"):
        cz.Quantize.from_dict({"activations": "static", "smooth": "most"})


def test_rows_are_kept_within_the_memory_budget(monkeypatch):
    data = CalibrationData("test", calibration(), None, 0)
    model = tiny_norm_mlp()
    names = ["1", "3"]
    ranges = measure_input_ranges(model, names, data)
    assert all(r.rows is None for r in ranges)  # only kept when asked for
    kept = measure_input_ranges(model, names, data, keep_rows=True)
    want = float_inputs(model, torch.cat(calibration()))
    for rng in kept:  # one batch of 128 rows, all of them kept
        torch.testing.assert_close(rng.rows, want[rng.layers[0]].reshape(-1, rng.rows.shape[1]))
    monkeypatch.setattr(activation_ranges, "SEARCH_BYTES", 4 * (64 + 128) * 10)  # 10 rows for both
    small = measure_input_ranges(model, names, data, keep_rows=True)
    assert [len(r.rows) for r in small] == [10, 10]
    smooth_weights(model, small, AUTO, set(), bits=8)
    assert all(r.alpha in ALPHA_GRID for r in small)


def test_smoothing_factors_are_bounded_by_their_low_quantile_and_a_maximum():
    low = torch.linspace(1, 100, 100)
    rng = InputRange(layers=["a"], channel_min=-low, channel_max=(1.5 * low) ** 2)  # up to 22500
    weight = torch.ones(8, 100)
    raw = 1.5 * low  # max|x|^0.5 / max|W|^0.5 with max|W| = 1: 1.5 .. 150
    factor = smoothing_factor(rng, [weight], 0.5)
    assert float(factor.max()) == MAX_FACTOR  # the loudest channels: capped
    torch.testing.assert_close(factor.min(), torch.quantile(raw, 0.1))  # the quietest: raised
    middle = (raw > torch.quantile(raw, 0.1)) & (raw < MAX_FACTOR)
    torch.testing.assert_close(factor[middle], raw[middle])  # the rest as SmoothQuant computes them


def test_bias_correction_keeps_each_layers_mean_output_on_the_calibration_data():
    reference = tiny_norm_mlp()
    inputs = float_inputs(reference, torch.cat(calibration()))
    corrected, plain = quantized(bias_correction=True), quantized()
    assert cz.Quantize(scheme="int8", activations="static").corrects_bias  # on by default with static
    for name, x in inputs.items():
        want = reference.get_submodule(name)(x).detach()
        shift = {}
        for label, result in (("corrected", corrected), ("plain", plain)):
            with torch.no_grad():
                shift[label] = (result.model.module.get_submodule(name)(x) - want).mean(dim=0).abs().max()
        assert float(shift["plain"]) > 1e-4  # quantization moved the mean ...
        assert float(shift["corrected"]) < 0.05 * float(shift["plain"])  # ... and the correction restored it
    with pytest.raises(BadInput, match="bias_correction"):
        cz.Quantize(scheme="int8", activations="dynamic", bias_correction=True)


def test_the_report_compares_what_a_smoothed_layer_computes(tiny_bert, tmp_path):
    """SmoothQuant scales the stored weight's columns (and the input by the inverse): the weight
    SQNR is of the product, not of the scaled columns against the float ones (negative dB)."""
    import torch

    import compress as cz
    from compress.eval.size import tensor_errors

    data = torch.randint(5, 100, (8, 16), generator=torch.Generator().manual_seed(0))
    out = cz.quantize(tiny_bert, "int8", activations="static", smooth=0.8, data=data).save(tmp_path / "s")
    rows = tensor_errors(out, tiny_bert)
    assert len(rows) > 12 and min(r["sqnr_db"] for r in rows) > 25
