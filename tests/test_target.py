"""`--target auto`: `compress quantize MODEL` with no choice of its own takes what is fastest on the
machine (compress.recommend's measured table), turned into the recipe: scheme, activations, weight bits,
the export and the runtime timed; the report says what was picked and why."""

from __future__ import annotations

import dataclasses
import json

import pytest
from click.testing import CliRunner

import compress as cz
import compress.hardware as hardware
from compress.cli import main
from compress.target import auto_target


def pretend_cpu(monkeypatch, *features: str) -> None:
    real = hardware.detect()
    cpu = dataclasses.replace(real.cpu, arch="x86_64", features=frozenset(features))
    monkeypatch.setattr(hardware, "detect", lambda: dataclasses.replace(real, cpu=cpu))


@pytest.fixture(autouse=True)
def default_target(monkeypatch):
    monkeypatch.delenv("COMPRESS_TARGET")  # conftest asks other tests for INT8 weight-only


def test_an_amx_cpu_gets_static_int8_in_openvino(tiny_bert, monkeypatch):
    pretend_cpu(monkeypatch, "avx2", "avx512f", "avx512_vnni", "amx_int8", "amx_bf16")
    target = auto_target(tiny_bert)
    assert target.settings == {"scheme": "int8", "activations": "static", "weight_bits": 8}
    assert target.exports == ["openvino"] and target.runtime == "openvino" and target.embeddings
    assert "amx" in target.reason and "measured" in target.reason


def test_an_avx2_cpu_gets_dynamic_int8_with_7_bit_weights_in_onnx_runtime(tiny_bert, monkeypatch):
    pretend_cpu(monkeypatch, "avx2")
    target = auto_target(tiny_bert)
    assert target.settings == {"scheme": "int8", "activations": "dynamic", "weight_bits": 7}
    assert (target.exports, target.runtime) == (["onnx"], "onnxruntime")


def test_what_the_model_cannot_take_is_skipped_with_the_reason(tiny_bert, bare_checkpoint, monkeypatch):
    pretend_cpu(monkeypatch, "avx2")
    bare = auto_target(bare_checkpoint)  # no architecture: nothing to export, weight-only in torch
    assert bare.settings["activations"] == "none" and bare.exports == [] and bare.runtime == "torch"
    assert "config.json or --module" in bare.reason
    pretend_cpu(monkeypatch, "avx2", "amx_int8")
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt"):
        (tiny_bert.parent / name).unlink(missing_ok=True)
    no_text = auto_target(tiny_bert)  # static ranges need calibration data it can read
    assert no_text.settings.get("activations") != "static" and "--calib FILE.npz" in no_text.reason


def test_the_command_with_no_choice_takes_the_target_and_says_so(tiny_bert, tmp_path, monkeypatch):
    pretend_cpu(monkeypatch, "avx2")
    out = tmp_path / "out"
    quick = ["--limit", "8", "--budget", "0.5", "--batch-size", "2", "--seq-len", "8", "--device", "cpu"]
    result = CliRunner().invoke(
        main, ["quantize", str(tiny_bert), "-o", str(out), *quick, "--json", "-", "-q"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [row["runtime"] for row in report["latency"]] == ["onnxruntime"]  # the headline is the chosen one
    assert report["notes"][0].startswith("recipe int8: target auto:")
    assert (out / "model.onnx").is_file()
    recipe = cz.Recipe.load(out / "recipe.yaml")
    assert recipe.passes[0].activations == "dynamic" and recipe.passes[0].weight_bits == 7
    assert recipe.description.startswith("target auto:")


def test_a_choice_of_your_own_sets_the_target_aside(tiny_bert, monkeypatch):
    pretend_cpu(monkeypatch, "avx2")
    for extra in (["--scheme", "int4"], ["--activations", "none"], ["--target", "none"]):
        result = CliRunner().invoke(main, ["quantize", str(tiny_bert), *extra, "--dry-run"])
        assert result.exit_code == 0, result.output
        recipe = cz.Recipe.loads(result.stdout)
        assert not recipe.export and "target auto" not in recipe.description
        assert recipe.passes[0].scheme == ("int4" if "int4" in extra else "int8")
