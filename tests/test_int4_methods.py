"""INT4 methods: GPTQ and AWQ against round to nearest, the data-free refinements, one stored format."""

from __future__ import annotations

import pytest
import torch

import compress as cz
from compress.formats.quantized import QuantizedTensor
from compress.passes.quantize.datafree import quantize_int4_data_free
from compress.passes.quantize.rtn import sqnr_db
from compress.qmodules import QuantLinear
from compress.testing import correlated_inputs, tiny_norm_mlp


@pytest.fixture
def calib_text(tmp_path):
    """A short text file: the built-in wiki-train takes seconds to tokenize with the tiny tokenizer."""
    path = tmp_path / "calib.txt"
    path.write_text(
        " ".join(["the project team will send the report by email today, please check the list"] * 40)
    )
    return str(path)


def _output_error(model, quantized, inputs) -> float:
    with torch.no_grad():
        ref, out = model(inputs), quantized(inputs)
    return float((out - ref).pow(2).mean() / ref.pow(2).mean())


@pytest.mark.parametrize("method", ["gptq", "awq"])
def test_data_aware_methods_beat_round_to_nearest_on_correlated_inputs(method):
    model = tiny_norm_mlp()
    calibration = list(correlated_inputs(256, seed=1).split(32))
    held_out = correlated_inputs(256, seed=2)
    rtn = cz.quantize(model, "int4", group_size=16).model.module
    art = cz.quantize(model, "int4", group_size=16, method=method, data=calibration)
    assert {c["method"] for c in art.changes.values()} == {method}
    rtn_error = _output_error(model, rtn, held_out)
    method_error = _output_error(model, art.model.module, held_out)
    assert method_error < 0.8 * rtn_error, (method, method_error, rtn_error)


def test_awq_folds_its_scales_into_the_norm_and_the_previous_linear():
    model = tiny_norm_mlp()
    art = cz.quantize(model, "int4", group_size=16, method="awq", data=list(correlated_inputs(128).split(32)))
    folds = {name: change.get("awq_fold") for name, change in art.changes.items()}
    assert folds == {"1.weight": "0 (weight)", "3.weight": "1 (rows)"}
    assert not torch.equal(art.model.module[0].weight, model[0].weight)  # the norm carries 1/s


@pytest.mark.parametrize("symmetric", [True, False])
def test_data_free_refinements_never_lose_to_round_to_nearest(symmetric):
    torch.manual_seed(0)
    w = torch.randn(64, 256)
    w[::7, ::11] *= 12  # outliers: where clipping pays
    rtn = quantize_int4_data_free(w, 32, symmetric, "rtn")
    mse = quantize_int4_data_free(w, 32, symmetric, "mse")
    hqq = quantize_int4_data_free(w, 32, symmetric, "hqq")
    assert sqnr_db(w, mse.dequantize()) > sqnr_db(w, rtn.dequantize()) + 0.1
    assert (hqq.dequantize() - w).abs().mean() < (rtn.dequantize() - w).abs().mean()
    for qt in (mse, hqq):  # the one stored format
        assert isinstance(qt, QuantizedTensor) and qt.scheme == "int4" and qt.symmetric == symmetric
        assert qt.scale.dtype == torch.float16 and qt.data.dtype == torch.uint8


@pytest.mark.parametrize("method", ["mse", "hqq", "gptq", "awq"])
def test_every_method_saves_in_the_rtn_format_and_loads_back(method, tiny_llama, tmp_path, calib_text):
    data = {"data": calib_text, "calib": {"samples": 4, "seq_len": 32}} if method in ("gptq", "awq") else {}
    art = cz.quantize(tiny_llama, "int4", group_size=16, method=method, **data)
    art.save(tmp_path / "out")
    back = cz.load(tmp_path / "out")
    assert isinstance(back.module.model.layers[0].mlp.down_proj, QuantLinear)
    recipe = back.compression.recipe[0]
    assert recipe["method"] == method
    if data:
        assert recipe["calibration"] == {"data": calib_text, "samples": 4, "seq_len": 32, "seed": 0}
        assert back.compression.stats["quantize.calibration_tokens"] == 4 * 32
        assert back.compression.stats["quantize.peak_rss_mb"] > 0
    ids = torch.randint(5, 60, (2, 12))
    with torch.no_grad():
        expected = art.model.module(input_ids=ids).logits
        assert torch.allclose(back.module(input_ids=ids).logits, expected, atol=1e-5)


def test_mixed_precision_keeps_named_layers_at_int8_or_float(tiny_llama, calib_text):
    art = cz.quantize(
        tiny_llama,
        "int4",
        group_size=16,
        method="gptq",
        data=calib_text,
        calib={"samples": 4, "seq_len": 32},
        keep_int8=("*.down_proj",),
        exclude=("model.layers.0.self_attn.o_proj",),
    )
    schemes = {name: change["scheme"] for name, change in art.changes.items()}
    assert schemes["model.layers.1.mlp.down_proj.weight"] == "int8"
    assert schemes["model.layers.1.mlp.up_proj.weight"] == "int4"
    assert "model.layers.0.self_attn.o_proj.weight" not in schemes
    assert isinstance(art.model.module.model.layers[0].self_attn.o_proj, torch.nn.Linear)


def test_peak_rss_is_the_process_own_not_its_parents():
    """A small program started by a large one reports its own peak (getrusage's maxrss would count
    the parent image it was forked from)."""
    import subprocess
    import sys

    from compress.memory import peak_rss_mb

    ballast = torch.ones(64 * 2**20)  # 256 MB in this process
    assert ballast.sum() > 0
    code = "from compress.memory import peak_rss_mb; print(peak_rss_mb())"
    child = float(
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    )
    assert peak_rss_mb() > 256
    assert 0 < child < 200
