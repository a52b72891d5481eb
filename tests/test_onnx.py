"""ONNX export, the export check (a wrong export is caught), sessions, and the onnxruntime latency rows."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import compress as cz
from compress.errors import BadInput, Unavailable, Unsupported
from compress.eval.latency import LatencySettings
from compress.onnx import check_export, export_onnx, open_session, provider_for, supplied_onnx
from compress.onnx.module import OrtModule
from compress.testing import tiny_cnn, tiny_mlp
from tests.conftest import assert_measured_latency

QUICK = LatencySettings(warmup=1, min_rounds=3, max_rounds=6, budget_s=0.2)


class FrozenBatch(nn.Module):
    """Turns the batch size into a Python int: the tracer freezes it into the graph."""

    def forward(self, x):
        return x.reshape(int(x.shape[0]), -1) * 2


class NotExportable(nn.Module):
    def __init__(self):
        super().__init__()
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        return self.head(torch.fft.fft(x).real)


def test_export_runs_and_agrees_on_other_batch_sizes(tmp_path):
    mlp = tiny_mlp()
    graph = export_onnx(mlp, torch.randn(3, 32), tmp_path / "mlp")
    assert graph.path.exists() and graph.input_names == ["input"] and not graph.external_data
    check = check_export(graph.path, mlp, [torch.randn(3, 32), torch.randn(7, 32)])
    assert check.max_abs_diff < 1e-5 and check.shapes == [[3, 32], [7, 32]]
    assert mlp.training is False


def test_a_wrong_export_is_refused_with_the_numbers(tmp_path):
    mlp = tiny_mlp(seed=0)
    graph = export_onnx(mlp, torch.randn(2, 32), tmp_path / "a")
    other = tiny_mlp(seed=1)  # a different model: the graph does not stand for it
    with pytest.raises(Unsupported, match="differs from torch by up to"):
        check_export(graph.path, other, [torch.randn(2, 32)])


def test_an_export_that_froze_the_batch_size_is_caught(tmp_path):
    module = FrozenBatch()
    graph = export_onnx(module, torch.randn(2, 3, 4), tmp_path / "f")
    check_export(graph.path, module, [torch.randn(2, 3, 4)])  # the export's own shape passes
    with pytest.raises(Unsupported, match="shape"):
        check_export(graph.path, module, [torch.randn(5, 3, 4)])


def test_dict_inputs_keep_their_names_and_dynamic_sequence(tmp_path, tiny_bert):
    model = cz.load(tiny_bert)
    batch = model.tokenizer(
        ["free money now", "the team meeting is today at noon"], return_tensors="pt", padding=True
    )
    sample = {k: batch[k] for k in ("input_ids", "attention_mask")}
    graph = export_onnx(model.module, sample, tmp_path / "bert")
    assert graph.input_names == ["input_ids", "attention_mask"]
    longer = model.tokenizer(["a", "b c d e f g h i j k l m n o p"] * 2, return_tensors="pt", padding=True)
    check = check_export(graph.path, model.module, [sample, {k: longer[k] for k in sample}])
    assert check.shapes[1] == [4, longer["input_ids"].shape[1]]


def test_large_weights_go_to_external_data(tmp_path):
    mlp = tiny_mlp()
    graph = export_onnx(mlp, torch.randn(2, 32), tmp_path / "ext", external_data_bytes=0)
    assert graph.external_data and (tmp_path / "ext" / "model.onnx.data").exists()
    check_export(graph.path, mlp, [torch.randn(4, 32)])


def test_a_module_that_cannot_export_says_why(tmp_path):
    with pytest.raises(Unsupported, match="ONNX export failed"):
        export_onnx(NotExportable(), torch.randn(2, 8), tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_providers_and_threads():
    assert provider_for("cpu") == "CPUExecutionProvider"
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(Unavailable, match="no CUDAExecutionProvider"):
            provider_for("cuda")


def test_supplied_graph_beside_the_checkpoint(tmp_path):
    assert supplied_onnx(tmp_path) is None
    (tmp_path / "model.onnx").write_text("not a graph")
    with pytest.raises(BadInput, match="not a readable ONNX file"):
        supplied_onnx(tmp_path)


def test_ort_module_answers_like_the_torch_module(tmp_path):
    cnn = tiny_cnn()
    x = torch.randn(2, 1, 16, 16)
    graph = export_onnx(cnn, x, tmp_path / "cnn")
    session = open_session(graph.path, threads=1)
    assert session.get_session_options().intra_op_num_threads == 1
    out = OrtModule(graph.path)(x).logits
    assert torch.allclose(out, cnn(x), atol=1e-5)


def test_onnxruntime_latency_row_and_unavailable_rows(tiny_bert):
    base = cz.load(tiny_bert)
    cand = cz.quantize(base, scheme="int8")
    report = cz.evaluate(
        cand, base, task="fidelity", runtimes=("torch", "onnxruntime"), devices=("cpu", "cuda"), latency=QUICK
    )
    rows = {(r["device"], r["runtime"]): r for r in report.latency}
    ort_row = rows[("cpu", "onnxruntime")]
    assert_measured_latency(ort_row, min_rounds=QUICK.min_rounds)
    assert ort_row["threads"] >= 1
    assert ort_row["onnx"]["candidate"]["source"] == "exported"
    assert ort_row["onnx"]["candidate"]["check_max_abs_diff"] < 1e-3
    assert ort_row["peak_rss_mb"] > 0 and ort_row["baseline_peak_rss_mb"] > 0
    assert any(n.startswith("onnxruntime: ") for n in report.notes)
    if not torch.cuda.is_available():
        assert rows[("cuda", "torch")]["status"] == "unavailable"
        assert "CUDAExecutionProvider" in rows[("cuda", "onnxruntime")]["reason"]
    assert report.metric("latency.cpu.onnxruntime.speedup") == ort_row["speedup"]


def test_a_model_that_cannot_export_gets_an_unavailable_row_not_a_crash():
    base = NotExportable().eval()
    cand = cz.quantize(base, scheme="int8")
    x = torch.randn(4, 8)
    report = cz.evaluate(
        cand, base, inputs=x, runtimes=("torch", "onnxruntime"), devices=("cpu",), latency=QUICK
    )
    torch_row, ort_row = report.latency
    assert torch_row["status"] == "ok"
    assert ort_row["status"] == "unavailable" and ort_row["reason"].startswith("baseline: ONNX export failed")


def test_unknown_runtime_or_device_is_bad_input(tiny_bert):
    with pytest.raises(BadInput, match="unknown runtime 'tensorrt'"):
        cz.evaluate(tiny_bert, tiny_bert, runtimes=("tensorrt",))
    with pytest.raises(BadInput, match="unknown device 'tpu'"):
        cz.evaluate(tiny_bert, tiny_bert, devices=("tpu",))


@pytest.mark.real_model
def test_real_minilm_exports_faithfully(minilm, tmp_path):
    from compress.onnx.samples import export_samples

    model = cz.load(minilm)
    sample, checks = export_samples(None)(model)
    graph = export_onnx(model.module, sample, tmp_path / "minilm")
    check = check_export(graph.path, model.module, [sample, *checks])
    assert check.max_abs_diff < 1e-3 and check.cosine_min > 0.99999
    assert graph.input_names == ["input_ids", "attention_mask"]


def test_latency_settings_are_checked():
    with pytest.raises(BadInput, match="threads must be between 1 and"):
        LatencySettings.from_dict({"threads": 0})
    with pytest.raises(BadInput, match="batch_size must be between 1 and"):
        LatencySettings.from_dict({"batch_size": 0})


def test_an_export_check_reads_only_the_positions_the_attention_mask_keeps():
    """Padding positions compute nothing anyone reads (a stateful LM's differ from torch's there);
    a difference at a real position is still refused."""
    import pytest
    import torch

    from compress.errors import Unsupported
    from compress.onnx.check import compare_outputs

    class Echo(torch.nn.Module):
        def forward(self, input_ids, attention_mask):
            return input_ids.float().unsqueeze(-1).repeat(1, 1, 4)

    ids = torch.arange(12).reshape(2, 6)
    mask = torch.ones(2, 6, dtype=torch.int64)
    mask[1, :2] = 0  # the second row left-padded
    sample = {"input_ids": ids, "attention_mask": mask}

    def run_with(position):
        def run(named):
            out = named["input_ids"].float().unsqueeze(-1).repeat(1, 1, 4).numpy()
            out[position] = 1e3
            return out

        return run

    check = compare_outputs(run_with((1, 0)), Echo(), [sample], name="m", runtime="R")
    assert check.max_abs_diff == 0.0
    with pytest.raises(Unsupported, match="differs from torch"):
        compare_outputs(run_with((1, 3)), Echo(), [sample], name="m", runtime="R")
