"""`compress distill`: a run with its report, a QAT run, and bad input (exit 2, nothing left behind)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

import compress as cz
from compress.cli import main
from tests.test_distill import one_thread, write_jsonl  # noqa: F401 (one_thread: autouse fixture)

FAST = ["--limit", "8", "--budget", "0.2", "--batch-size", "2", "--seq-len", "16", "--device", "cpu"]
TRAIN = ["--train-batch-size", "8", "--max-length", "16"]


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_layer_dropped_student_with_report_of_before_and_after(tiny_bert, tmp_path):
    data = write_jsonl(tmp_path / "train.jsonl")
    out, report = tmp_path / "small", tmp_path / "r.json"
    args = ["--teacher", str(tiny_bert), "--data", str(data), "--student-layers", "1", "-o", str(out)]
    result = run("distill", *args, *TRAIN, "--eval-every", "3", "--json", str(report), *FAST)
    assert result.exit_code == 0, result.output
    d = json.loads(report.read_text())["distillation"]
    assert d["teacher"] == str(tiny_bert) and d["data"]["source"] == str(data)
    assert d["steps"] == 6 and [v["step"] for v in d["validation"]] == [0, 3, 6]
    before, after = d["accuracy_before"], json.loads(report.read_text())["accuracy"]
    assert before["task"] == after["task"] == "classification" and before["metric"] == after["metric"]
    assert before["baseline"] == after["baseline"]  # the same teacher on the same task and data
    assert before["retention"] == pytest.approx(before["value"] / before["baseline"])
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 1
    assert not (tmp_path / "small-checkpoints").exists()  # removed after success


def test_qat_run_keeps_its_checkpoints_and_writes_int4(tiny_llama, tmp_path):
    int4 = cz.quantize(str(tiny_llama), "int4", group_size=32).save(tmp_path / "int4")
    text = tmp_path / "train.txt"
    text.write_text("\n\n".join(f"the quick brown fox {i} jumps over the lazy dog" for i in range(30)))
    folder = tmp_path / "ckpt"
    args = ["--teacher", str(tiny_llama), "--data", str(text), "--qat", "-o", str(tmp_path / "q")]
    extra = ["--checkpoint-dir", str(folder), "--keep-checkpoints", "--no-eval", "-q"]
    result = run("distill", str(int4), *args, *TRAIN, *extra)
    assert result.exit_code == 0, result.output
    assert (folder / "last.safetensors").exists()
    layer = cz.load(tmp_path / "q").module.model.layers[0].mlp.up_proj
    assert type(layer).__name__ == "QuantLinear" and layer.scheme == "int4"


def test_bad_input_exits_2_and_leaves_nothing(tiny_bert, tiny_llama, tmp_path):
    data = write_jsonl(tmp_path / "train.jsonl")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    out = tmp_path / "out"
    layers = ["--student-layers", "1", "--teacher", str(tiny_bert)]
    cases = [
        ([str(tiny_bert), "--teacher", str(tiny_llama), "--data", str(data)], "family"),
        ([*layers, "--data", str(empty)], "no training"),
        ([*layers, "--data", str(data), "--layer-pair", "encoder.layer.0:encoder.layer.9"], "does not have"),
        (["--teacher", str(tiny_bert), "--data", str(data)], "--student-layers"),
        ([*layers, "--data", str(data), "--resume"], "no checkpoint"),
    ]
    for args, message in cases:
        result = run("distill", *args, "-o", str(out), *TRAIN, "--no-eval")
        assert result.exit_code == 2, (args, result.output)
        assert message in " ".join(result.output.split()), result.output
        assert not out.exists()
