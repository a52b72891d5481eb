"""Bad calibration data and bad method settings: one clear sentence, nothing left behind."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import compress as cz
from compress.calibration import Calibration, CalibrationData, draw, from_memory
from compress.cli import main
from compress.errors import BadInput
from compress.passes.quantize import QuantizeConfig
from compress.testing import tiny_mlp

GPTQ = {"scheme": "int4", "group_size": 16, "method": "gptq"}


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.mark.parametrize(
    ("write", "message"),
    [
        (None, "calib.txt: no such file"),
        (lambda p: p.write_text("free money"), "fewer than one calibration sample"),
        (lambda p: p.write_text("   "), "is empty"),
    ],
)
def test_bad_text_calibration_is_a_clear_error(tiny_llama, tmp_path, write, message):
    path = tmp_path / "calib.txt"
    if write:
        write(path)
    with pytest.raises(BadInput, match=message):
        cz.quantize(tiny_llama, **GPTQ, data=str(path), calib={"seq_len": 32})


def test_bad_npz_calibration_is_a_clear_error(tiny_llama, tmp_path):
    np.savez(tmp_path / "floats.npz", x=np.random.rand(4, 12).astype("float32"))
    with pytest.raises(BadInput, match="does not fit the model"):
        cz.quantize(tiny_llama, **GPTQ, data=str(tmp_path / "floats.npz"))
    np.savez(
        tmp_path / "uneven.npz", input_ids=np.zeros((4, 8), "int64"), attention_mask=np.ones((3, 8), "int64")
    )
    with pytest.raises(BadInput, match="different numbers of samples"):
        draw(Calibration(data=str(tmp_path / "uneven.npz")))
    (tmp_path / "junk.npz").write_bytes(b"not a zip archive at all")
    with pytest.raises(BadInput, match=r"not a readable \.npz"):
        draw(Calibration(data=str(tmp_path / "junk.npz")))


def test_npz_with_named_arrays_gives_keyword_inputs(tiny_llama, tmp_path):
    ids = np.random.randint(5, 60, size=(6, 16)).astype("int64")
    np.savez(tmp_path / "tokens.npz", input_ids=ids, attention_mask=np.ones_like(ids))
    data = draw(Calibration(data=str(tmp_path / "tokens.npz"), samples=4))
    assert set(data.samples[0]) == {"input_ids", "attention_mask"} and data.samples[0]["input_ids"].shape == (
        1,
        16,
    )
    art = cz.quantize(tiny_llama, **GPTQ, data=str(tmp_path / "tokens.npz"), calib={"samples": 4})
    assert art.recipe[0]["calibration"]["data"] == str(tmp_path / "tokens.npz")


def test_samples_given_in_memory_are_recorded_as_drawn(tiny_llama):
    ids = torch.randint(5, 60, (3, 12))
    art = cz.quantize(tiny_llama, **GPTQ, data=CalibrationData("my samples", list(ids.split(1)), 12, 7))
    assert art.recipe[0]["calibration"] == {"data": "my samples", "samples": 3, "seq_len": 12, "seed": 7}


def test_data_aware_methods_need_data_they_can_use():
    with pytest.raises(BadInput, match="needs a model with a tokenizer"):
        cz.quantize(tiny_mlp(), **GPTQ)  # a bare module: the default text calibration cannot be tokenized
    with pytest.raises(BadInput, match="list of samples given as data is empty"):
        cz.quantize(tiny_mlp(), **GPTQ, data=[])
    with pytest.raises(BadInput, match="each sample must be a tensor"):
        from_memory(["text"])
    with pytest.raises(BadInput, match="does not fit the model"):
        cz.quantize(tiny_mlp(), **GPTQ, data=[torch.randn(4, 7)])  # 7 features, the model takes 32


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"scheme": "int8", "method": "gptq"}, "use scheme int4"),
        ({"scheme": "int4", "damp": 0.05}, "'damp' applies to method gptq"),
        ({"scheme": "int4", "method": "awq", "act_order": True}, "'act_order' applies to method gptq"),
        ({"scheme": "int4", "method": "mse", "clip": False}, "'clip' applies to method gptq, method awq"),
        ({"scheme": "int4", "method": "gptq", "damp": 2.0}, "not between 0 and 1"),
        ({"scheme": "int4", "calibration": {"samples": 8}}, "calibration"),
        ({"scheme": "int4", "method": "gptq", "calibration": {"samples": 0}}, "need at least 1"),
        ({"scheme": "int4", "method": "gptq", "calibration": {"sampels": 8}}, "did you mean 'samples'"),
        ({"keep_int8": ["lm_head"]}, "'keep_int8' applies to scheme int4"),
        ({"scheme": "int4", "method": "gptg"}, "did you mean 'gptq'"),
    ],
)
def test_bad_method_settings_are_clear_errors(settings, message):
    with pytest.raises(BadInput, match=message):
        QuantizeConfig.from_dict(settings)


def test_keep_int8_pattern_that_matches_nothing_is_an_error(tiny_llama):
    with pytest.raises(BadInput, match="keep_int8: pattern 'lm_haed' matches no targeted layer"):
        cz.quantize(tiny_llama, "int4", group_size=16, keep_int8=("lm_haed",))


def test_cli_gptq_with_a_text_file(tiny_llama, tmp_path):
    text = tmp_path / "calib.txt"
    text.write_text(" ".join(["the report on the project is due today, please send it to the team"] * 60))
    out = tmp_path / "q"
    args = ["quantize", str(tiny_llama), "-o", str(out), "--scheme", "int4", "--group-size", "16"]
    result = run(*args, "--method", "gptq", "--calib", str(text), "--calib-samples", "4", "--no-eval", "-q")
    assert result.exit_code == 0, result.output
    back = cz.load(out)
    recipe = back.compression.recipe[0]
    assert recipe["method"] == "gptq" and recipe["calibration"]["data"] == str(text)
    assert recipe["calibration"]["samples"] == 4
    assert back.compression.stats["quantize.seconds"] > 0


def test_a_text_file_goes_to_the_pass_that_uses_it_not_to_the_next(tiny_llama, tmp_path):
    text = tmp_path / "calib.txt"
    text.write_text(" ".join(["the report on the project is due today, please send it to the team"] * 60))
    gptq = {"kind": "quantize", **GPTQ, "calibration": {"samples": 4, "seq_len": 32}}
    int8_embeddings = {"kind": "quantize", "scheme": "int8", "targets": {"types": ["embedding"]}}
    art = cz.apply(str(tiny_llama), [gptq, int8_embeddings], data=str(text))
    assert [step["scheme"] for step in art.recipe] == ["int4", "int8"]
    assert art.recipe[0]["calibration"]["data"] == str(text)
    assert art.recipe[1]["calibration"] is None  # the INT8 pass uses no data


def test_cli_bad_calibration_exits_2_and_leaves_nothing(tiny_llama, tmp_path):
    out = tmp_path / "q"
    args = ["quantize", str(tiny_llama), "-o", str(out), "--scheme", "int4", "--group-size", "16"]
    result = run(*args, "--method", "awq", "--calib", str(tmp_path / "missing.txt"), "--no-eval")
    assert result.exit_code == 2 and "missing.txt: no such file" in result.output
    assert not out.exists()
    result = run(*args, "--damp", "0.1", "--no-eval")
    assert result.exit_code == 2 and "'damp' applies to method gptq" in result.output


def test_ctrl_c_during_gptq_leaves_no_output(tiny_llama, tmp_path, monkeypatch):
    import compress.passes.quantize.apply_blocks as blocks

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(blocks, "quantize_block", interrupted)
    (tmp_path / "calib.txt").write_text(" ".join(["send the report to the team today"] * 80))
    out = tmp_path / "q"
    args = ["quantize", str(tiny_llama), "-o", str(out), "--scheme", "int4", "--group-size", "16"]
    result = run(
        *args, "--method", "gptq", "--calib", str(tmp_path / "calib.txt"), "--calib-samples", "2", "--no-eval"
    )
    assert result.exit_code == 130 and "interrupted" in result.output
    assert not out.exists()
