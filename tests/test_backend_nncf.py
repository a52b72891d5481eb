"""`--backend nncf`: NNCF's static INT8 and INT4 weight compression behind compress's CLI, recipe
and report, on a tiny BERT (NNCF is slow to import, so few tests, each doing several checks)."""

from __future__ import annotations

import json
import subprocess
import sys

import onnx
import pytest
import torch
from click.testing import CliRunner

import compress as cz
from compress.api import run_recipe
from compress.cli import main
from compress.errors import BadInput
from compress.eval.text import tokenize
from tests.conftest import assert_measured_latency

TEXTS = ["the quick brown fox", "a longer sentence with padding in the batch", "hello"]


def op_types(path) -> set[str]:
    return {n.op_type for n in onnx.load(str(path)).graph.node}


def agreement(float_path, onnx_folder) -> float:
    """Worst per-token cosine between the float torch model and the ONNX-only candidate."""
    base, cand = cz.load(float_path), cz.load(onnx_folder)
    batch = {k: v for k, v in tokenize(base, TEXTS, 32).items() if k in ("input_ids", "attention_mask")}
    with torch.inference_mode():
        a = base.module(**batch).last_hidden_state
    b = cand.module(**batch).last_hidden_state
    mask = batch["attention_mask"].bool()
    return torch.nn.functional.cosine_similarity(a[mask], b[mask], dim=-1).min().item()


def test_int8_static_through_the_cli_writes_a_qdq_graph_that_agrees_with_float(tiny_bert, tmp_path):
    out = tmp_path / "nncf-int8"
    args = ["quantize", str(tiny_bert), "--backend", "nncf", "--calib-samples", "4", "--calib-seq-len", "16"]
    result = CliRunner().invoke(main, [*args, "-o", str(out), "--no-eval", "-q"])
    assert result.exit_code == 0, result.output
    assert (out / "model.onnx").is_file() and (out / "config.json").is_file()
    assert (out / "tokenizer.json").is_file() and not (out / "model.safetensors").exists()
    ops = op_types(out / "model.onnx")
    assert {"QuantizeLinear", "DequantizeLinear", "MatMul"} <= ops
    meta = {p.key: p.value for p in onnx.load(str(out / "model.onnx")).metadata_props}
    backend = json.loads(meta["compress.backend"])
    assert backend["name"] == "nncf" and backend["version"] and "nncf.quantize" in backend["call"]
    recipe = json.loads(meta["compress.recipe"])
    assert recipe[0]["backend"] == "nncf" and recipe[0]["calibration"]["samples"] == 4
    model = cz.load(out)
    assert model.onnx_only and model.backend["name"] == "nncf" and model.compression.recipe == recipe
    assert agreement(tiny_bert, out) > 0.98


def test_int4_through_a_recipe_is_evaluated_on_onnxruntime_with_torch_unavailable(tiny_bert, tmp_path):
    recipe = cz.Recipe.loads(
        """
version: 1
passes:
  - {kind: quantize, scheme: int4, group_size: 32, backend: nncf}
evaluate:
  task: embedding
  limit: 8
  devices: [cpu]
  runtimes: [torch, onnxruntime]
  latency: {batch_size: 2, seq_len: 16, budget_s: 0.5, min_rounds: 3}
""",
        "r.yaml",
    )
    result = run_recipe(recipe, tiny_bert, tmp_path / "int4", cache=None)
    graph = tmp_path / "int4" / "model.onnx"
    ops = op_types(graph)
    assert "MatMulNBits" in ops or "DequantizeLinear" in ops
    assert "Gather" in ops  # the embedding lookup stays float, as compress leaves embeddings by default
    # The tiny random BERT's output is dominated by its embeddings and residual path: zeroing every
    # Linear weight still agrees at 0.99917. NNCF INT4 g32 measured 0.99999 (weight-only, float
    # activations: no CPU-dependent saturation), so a bound between the two catches a broken graph.
    assert agreement(tiny_bert, tmp_path / "int4") > 0.9998
    report = result.report
    assert report.candidate["backend"]["name"] == "nncf"
    assert report.size["ratio"] < 0.8 and report.size["measured"].startswith("ONNX graph")
    rows = {r["runtime"]: r for r in report.latency}
    assert rows["torch"]["status"] == "unavailable" and "only as an ONNX graph" in rows["torch"]["reason"]
    assert_measured_latency(rows["onnxruntime"], min_rounds=3)
    assert report.accuracy.value is not None and report.tensors == []


def test_what_nncf_cannot_do_exits_2_and_leaves_nothing(tiny_bert, tmp_path):
    out = tmp_path / "out"
    run = CliRunner().invoke
    for extra in (["--activations", "dynamic"], ["--scheme", "int4", "--method", "hqq"], ["--exclude", "x*"]):
        result = run(main, ["quantize", str(tiny_bert), "--backend", "nncf", *extra, "-o", str(out), "-q"])
        assert result.exit_code == 2 and "backend nncf" in result.output, result.output
    with pytest.raises(BadInput, match="unknown value 'nncff'"):
        cz.Recipe.loads("version: 1\npasses:\n  - {kind: quantize, backend: nncff}\n", "r.yaml")
    # From Python as from the CLI: NNCF's graph waits in a temporary folder until it is saved.
    art = cz.quantize(tiny_bert, "int4", group_size=32, backend="nncf")
    saved = art.save(tmp_path / "from-python")
    assert saved == tmp_path / "from-python" / "model.onnx" and saved.is_file()
    assert (tmp_path / "from-python" / "config.json").is_file()

    # NNCF's INT4 on an embedding lookup writes a graph ONNX Runtime refuses (MatMulNBits fed int64 ids).
    args = ["quantize", str(tiny_bert), "--backend", "nncf", "--scheme", "int4", "--group-size", "32"]
    result = run(main, [*args, "--embeddings", "-o", str(out), "-q"])
    assert result.exit_code == 2 and "NNCF failed on bert: its graph does not run" in result.output
    assert "MatMulNBits" in result.output, result.output
    assert not out.exists()  # and no .partial folder: the no_partial_files fixture checks


def test_import_compress_does_not_import_nncf():
    code = "import sys, compress, compress.backends; assert 'nncf' not in sys.modules, 'nncf imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
