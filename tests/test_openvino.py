"""OpenVINO as a runtime of the evaluator (latency rows, precisions, accuracy through it) and as an
export format (an IR folder built on the checkpoint's own integers, checked against torch)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import compress as cz
from compress.cli import main
from compress.errors import BadInput, Unsupported
from compress.eval.calls import main_output
from compress.eval.latency import LatencySettings
from compress.eval.text import tokenize
from compress.exporters import export_config_from_dict, get_exporter, run_exports
from compress.openvino import IR_DIR, IR_NAME, compile_model, integer_kernels, precisions
from compress.qmodules import QuantEmbedding, QuantLinear
from compress.report import Report

QUICK = LatencySettings(batch_size=2, seq_len=16, warmup=1, min_rounds=2, max_rounds=3, budget_s=0.1)
LINEARS = 12  # tiny BERT: 2 layers x (q, k, v, attention output, intermediate, output)
TEXTS = ["an email about the quarterly report", "win a prize now", "see you at the meeting on friday"]


def quantize_cli(source: Path, out: Path, *args: str) -> Path:
    calib = out.parent / "calib.txt"
    calib.write_text(" ".join(["the team will send the report by email today, please check the list"] * 40))
    data = (
        ["--calib", str(calib), "--calib-samples", "4", "--calib-seq-len", "16"] if "static" in args else []
    )
    result = CliRunner().invoke(
        main, ["quantize", str(source), *args, *data, "-o", str(out), "--no-eval", "-q"]
    )
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def static_bert(_tiny_bert_src, tmp_path_factory) -> Path:
    """A static INT8 tiny BERT with no exported graph beside it (read-only: copy before writing)."""
    return quantize_cli(
        _tiny_bert_src, tmp_path_factory.mktemp("static") / "static", "--activations", "static"
    )


def evaluate(candidate, baseline, **kwargs):
    settings = {"runtimes": ("openvino",), "devices": ("cpu",), "latency": QUICK, "limit": 16, **kwargs}
    return cz.evaluate(candidate, baseline, **settings)


def outputs_through(xml: Path, model, texts=TEXTS) -> tuple[torch.Tensor, torch.Tensor]:
    """(OpenVINO's output of the IR, torch's) on a batch of texts of other lengths than the export's."""
    batch = tokenize(model, texts, 32)
    feeds = {k: batch[k] for k in ("input_ids", "attention_mask")}
    compiled = compile_model(xml)
    got = compiled.create_infer_request().infer({k: v.numpy() for k, v in feeds.items()})[0]
    with torch.inference_mode():
        want = main_output(model.module(**feeds)).float()
    return torch.from_numpy(np.array(got)), want


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0).item()


def test_static_int8_runs_integer_kernels_and_is_scored_through_openvino(static_bert, _tiny_bert_src):
    from compress.hardware import detect
    from compress.precision import precision_hint

    report = evaluate(static_bert, _tiny_bert_src)
    row = report.latency_row("cpu", "openvino")
    assert row is not None and row["speedup"] > 0 and row["threads"] >= 1
    # Without an export step, compress builds its integer graph; OpenVINO runs every Linear on u8 x i8.
    assert row["openvino"]["candidate"]["source"] == "integer graph"
    assert row["openvino"]["baseline"]["source"] == "exported"
    assert integer_kernels(row["openvino_precisions"]["candidate"]) == LINEARS  # u8/i8 (i8 if symmetric)
    assert set(row["openvino_precisions"]["baseline"]) == {"f32"}
    want, _ = precision_hint(None, detect().cpu.features, static_int8=True)  # float parts bf16 on a BF16 CPU
    assert row["openvino"]["candidate"]["inference_precision"] == want
    assert row["openvino"]["candidate"]["check_cosine_min"] >= 0.99
    assert "u8/i8 ×" in report.to_markdown()
    through = report.accuracy.details["by_runtime"]["openvino"]
    assert through["status"] == "ok" and through["retention"] is not None
    # The same probe on OpenVINO's embeddings: they differ from torch's by rounding flips only.
    assert abs(through["embedding_cosine_mean"] - report.accuracy.details["embedding_cosine_mean"]) < 0.01
    again = Report.from_dict(json.loads(report.to_json()))
    assert again.metric("accuracy.details.by_runtime.openvino.retention") == through["retention"]
    assert "accuracy.details.by_runtime.openvino.retention" in again.metric_paths()


def test_ovmodule_gives_torch_outputs_for_a_float_model(_tiny_bert_src, tmp_path):
    from compress.openvino.ir import convert_module
    from compress.openvino.module import OvModule

    model = cz.load(_tiny_bert_src)
    batch = tokenize(model, TEXTS, 32)
    sample = {k: batch[k] for k in ("input_ids", "attention_mask")}
    ov_model, how = convert_module(model.module, sample, tmp_path)
    assert how == "its float ONNX export"
    module = OvModule(compile_model(ov_model))
    with torch.inference_mode():
        for given in (sample, {"input_ids": sample["input_ids"]}):  # no mask: one of ones, as in torch
            want = model.module(**given).last_hidden_state
            assert torch.allclose(module(**given).last_hidden_state, want, atol=1e-5)


def test_ir_of_static_int8_agrees_with_torch_and_holds_the_stored_codes(static_bert, tmp_path):
    import openvino as ov

    folder = tmp_path / "static"
    shutil.copytree(static_bert, folder)
    written = run_exports(folder, [export_config_from_dict({"format": "openvino"})])
    xml = folder / IR_DIR / IR_NAME
    assert written == [xml] and xml.with_suffix(".bin").is_file()
    assert (folder / IR_DIR / "config.json").is_file() and (folder / IR_DIR / "tokenizer.json").is_file()
    model = cz.load(folder)
    got, want = outputs_through(xml, model)
    assert cosine(got, want) >= 0.99
    ir = ov.Core().read_model(str(xml))
    in_ir = {
        np.array(op.get_data()).tobytes()
        for op in ir.get_ops()
        if op.get_type_name() == "Constant" and op.get_element_type() == ov.Type.i8
    }
    modules = list(model.module.modules())
    stored = {m.weight.numpy().T.copy().tobytes() for m in modules if isinstance(m, QuantLinear)}
    stored |= {m.weight.numpy().tobytes() for m in modules if isinstance(m, QuantEmbedding)}
    tables = sum(isinstance(m, QuantEmbedding) for m in modules)
    assert tables == 3  # word, position and token type: INT8 by default
    assert len(in_ir) == LINEARS + tables and in_ir <= stored  # the checkpoint's integers, not re-quantized
    assert integer_kernels(precisions(compile_model(xml))) == LINEARS
    report = evaluate(folder, static_bert, task="fidelity")  # the evaluator runs the IR it finds
    assert report.latency_row("cpu", "openvino")["openvino"]["candidate"]["source"] == "ir"


def test_ir_of_int4_with_embeddings_keeps_4_bit_weights(_tiny_bert_src, tmp_path):
    folder = quantize_cli(
        _tiny_bert_src, tmp_path / "int4", "--scheme", "int4", "--group-size", "16", "--embeddings"
    )
    run_exports(folder, [export_config_from_dict({"format": "openvino"})])
    xml = folder / IR_DIR / IR_NAME
    model = cz.load(folder)
    assert any(isinstance(m, QuantEmbedding) for m in model.module.modules())
    got, want = outputs_through(xml, model)
    assert (got - want).abs().max().item() < 1e-4  # weight-only: the same arithmetic as torch
    counts = precisions(compile_model(xml))
    assert counts["f32/u4"] == LINEARS  # 4-bit weights decompressed in the kernel, activations float


def test_int4_with_layers_kept_at_int8_runs_both_weight_widths(_tiny_bert_src, tmp_path):
    """Mixed precision (an INT4 pass's keep_int8): the kept layers go to OpenVINO as int8 weights
    dequantized in the graph, the others as MatMulNBits; the evaluator and the IR agree with torch."""
    folder = quantize_cli(
        _tiny_bert_src, tmp_path / "mixed", "--scheme", "int4", "--group-size", "16", "--keep-int8", "*.query"
    )
    report = evaluate(folder, _tiny_bert_src)
    row = report.latency_row("cpu", "openvino")
    assert row is not None and row["status"] == "ok", report.latency
    assert row["openvino"]["candidate"]["source"] == "integer graph"
    assert row["openvino"]["candidate"]["check_max_abs_diff"] < 1e-4
    assert row["openvino_precisions"]["candidate"] == {"f32": 4, "f32/i8": 2, "f32/u4": LINEARS - 2}
    cfg = export_config_from_dict({"format": "openvino"})
    get_exporter("openvino").check([cz.Quantize.from_dict({"scheme": "int4", "keep_int8": ["*.query"]})], cfg)
    run_exports(folder, [cfg])
    got, want = outputs_through(folder / IR_DIR / IR_NAME, cz.load(folder))
    assert (got - want).abs().max().item() < 1e-4


def test_float_ir_equals_torch(_tiny_bert_src, tmp_path):
    folder = tmp_path / "bert"
    shutil.copytree(_tiny_bert_src.parent, folder)
    run_exports(folder, [export_config_from_dict("openvino")])
    got, want = outputs_through(folder / IR_DIR / IR_NAME, cz.load(folder))
    assert (got - want).abs().max().item() < 1e-4  # float32 weights: no FP16 rounding in the IR


def test_refused_combinations_say_one_sentence_and_write_nothing(_tiny_bert_src, tmp_path):
    spec = get_exporter("openvino")
    cfg = export_config_from_dict({"format": "openvino"})
    for settings in ({"activations": "dynamic"}, {"scheme": "int8"}):
        with pytest.raises(BadInput, match="needs activations static") as refused:
            spec.check([cz.Quantize.from_dict(settings)], cfg)
        message = str(refused.value)
        assert refused.value.exit_code == 2 and message.endswith(".") and "\n" not in message
    spec.check([cz.Quantize.from_dict({"activations": "static"})], cfg)  # accepted
    spec.check([cz.Quantize.from_dict({"scheme": "int4"})], cfg)
    # A checkpoint made without the check (the exporter run on its own) is refused the same way.
    folder = quantize_cli(_tiny_bert_src, tmp_path / "dynamic", "--activations", "dynamic")
    with pytest.raises(BadInput, match="needs activations static"):
        run_exports(folder, [cfg])
    assert not (folder / IR_DIR).exists()


def test_a_failed_check_leaves_nothing(static_bert, tmp_path, monkeypatch):
    monkeypatch.setattr("compress.onnx.integer.MIN_COSINE_ROUNDED_ACTIVATIONS", 1.01)
    folder = tmp_path / "static"
    shutil.copytree(static_bert, folder)
    with pytest.raises(Unsupported, match="OpenVINO output has cosine"):
        run_exports(folder, [export_config_from_dict("openvino")])
    assert not (folder / IR_DIR).exists()


def test_openvino_missing_gives_an_unavailable_row_with_the_reason(static_bert, _tiny_bert_src, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino now raises ImportError
    report = evaluate(static_bert, _tiny_bert_src, runtimes=("torch", "openvino"))
    row = next(r for r in report.latency if r["runtime"] == "openvino")
    assert row["status"] == "unavailable" and "openvino is not installed" in row["reason"]
    assert report.latency_row("cpu", "torch") is not None  # the other runtime still measured
    through = report.accuracy.details["by_runtime"]["openvino"]
    assert through["status"] == "unavailable" and "openvino is not installed" in through["reason"]


def test_cuda_is_unavailable_with_the_reason(static_bert, _tiny_bert_src):
    report = evaluate(static_bert, _tiny_bert_src, devices=("cuda",), task="fidelity")
    assert report.latency[0]["status"] == "unavailable" and "Intel GPUs" in report.latency[0]["reason"]


def test_cli_eval_with_runtime_openvino(static_bert, _tiny_bert_src, tmp_path):
    out = tmp_path / "report.json"
    args = ["eval", str(static_bert), "--baseline", str(_tiny_bert_src), "--runtime", "openvino"]
    args += ["--device", "cpu", "--limit", "8", "--budget", "0.1", "--batch-size", "2", "--seq-len", "16"]
    result = CliRunner().invoke(main, [*args, "--json", str(out), "-q"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    row = json.loads(out.read_text())["latency"][0]
    assert row["runtime"] == "openvino" and row["status"] == "ok" and row["openvino_precisions"]["candidate"]


@pytest.mark.real_model
def test_minilm_static_int8_with_embeddings_deploys_at_a_quarter_of_its_size(minilm, tmp_path):
    folder = quantize_cli(minilm, tmp_path / "minilm", "--activations", "static", "--embeddings")
    onnx = export_config_from_dict({"format": "onnx", "quant_format": "qdq"})
    run_exports(folder, [onnx, export_config_from_dict("openvino")])
    fp32 = minilm.stat().st_size
    ir_bytes = sum(p.stat().st_size for p in (folder / IR_DIR).glob("openvino_model.*"))
    assert (folder / "model.onnx").stat().st_size <= 0.27 * fp32
    assert ir_bytes <= 0.27 * fp32
