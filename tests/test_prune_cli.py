"""`compress prune` and the pass's settings: happy paths, and every bad input (exit 2, nothing left)."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

import compress as cz
from compress.cli import main
from compress.errors import BadInput, Unsupported
from compress.passes.prune import PruneConfig
from compress.testing import tiny_cnn, tiny_mlp
from tests.conftest import file_digest

FAST = ["--limit", "8", "--budget", "0.2", "--batch-size", "2", "--seq-len", "16", "--device", "cpu"]


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_prune_neurons_then_quantize_writes_a_smaller_model_and_report(tiny_bert, tmp_path):
    out, report = tmp_path / "p", tmp_path / "r.json"
    args = ["--pattern", "neurons", "--sparsity", "0.5", "--quantize", "int8", "--json", str(report)]
    result = run("prune", str(tiny_bert), "-o", str(out), *args, *FAST)
    assert result.exit_code == 0, result.output
    data = json.loads(report.read_text())
    assert data["compute"]["ideal_speedup"] > 1.1
    assert data["latency"][0]["ideal_speedup"] == data["compute"]["ideal_speedup"]
    assert data["sparsity"]["overall"] > 0.15  # the FFN is a fifth of the weights
    layer = next(x for x in data["sparsity"]["layers"] if x["name"].endswith("0.intermediate.dense.weight"))
    assert layer["shape"] == [64, 64] and layer["baseline_shape"] == [128, 64]
    assert data["size"]["ratio"] < 0.45
    assert data["candidate"]["recipe"][1]["kind"] == "quantize"
    assert json.loads((out / "config.json").read_text())["intermediate_size"] == 64


def test_prune_2_4_with_wanda_on_a_calibration_text(tiny_bert, tmp_path):
    text = tmp_path / "calib.txt"
    text.write_text("free money now click to win cash please send the report today " * 40)
    out = tmp_path / "w"
    calib = ["--calib", str(text), "--calib-samples", "4", "--calib-seq-len", "32"]
    result = run(
        "prune",
        str(tiny_bert),
        "-o",
        str(out),
        "--pattern",
        "2:4",
        "--method",
        "wanda",
        *calib,
        "--no-eval",
        "-q",
    )
    assert result.exit_code == 0, result.output
    w = cz.load(out).module.encoder.layer[0].intermediate.dense.weight.reshape(128, -1, 4)
    assert torch.all((w != 0).sum(dim=2) <= 2)


@pytest.mark.parametrize(
    ("settings", "error", "message"),
    [
        ({"sparsity": 1.0}, BadInput, "outside \\[0, 1\\)"),
        ({"sparsity": -0.1}, BadInput, "outside \\[0, 1\\)"),
        ({"pattern": "head"}, BadInput, "did you mean 'heads'"),
        ({"pattern": "4:2"}, BadInput, "0 < N < M"),
        ({"pattern": "2:4", "sparsity": 0.3}, BadInput, "contradicts"),
        ({"pattern": "neurons", "method": "wanda"}, BadInput, "magnitude or activation"),
        ({"method": "activation"}, BadInput, "magnitude or wanda"),
        ({"sparsity": "half"}, BadInput, "expected a number"),
        ({"ratio": 0.5}, BadInput, "unknown setting 'ratio'"),
    ],
)
def test_bad_settings(settings, error, message):
    with pytest.raises(error, match=message):
        PruneConfig.from_dict(settings)


def test_bad_pruning_requests():
    mlp = tiny_mlp(width=96)
    x = torch.randn(4, 32)
    with pytest.raises(BadInput, match="pattern 3:5 needs rows whose length is a multiple of 5; layer '0'"):
        cz.prune(mlp, "3:5")
    with pytest.raises(BadInput, match="would remove all 2 neurons of '0' \\(the whole layer\\)"):
        cz.prune(tiny_mlp(width=2), "neurons", 0.75, data=x)
    small = tiny_mlp()
    with torch.no_grad():
        small[0].weight.mul_(0.001)
    with pytest.raises(BadInput, match="would remove every weight of layer '0'"):
        cz.prune(small, "unstructured", 0.5, scope="global")
    with pytest.raises(
        Unsupported, match="finds no heads it can remove in Sequential \\(it finds neurons\\)"
    ):
        cz.prune(mlp, "heads", 0.5, data=x)
    with pytest.raises(BadInput, match="needs a sample input"):
        cz.prune(tiny_cnn(), "channels", 0.5)
    with pytest.raises(BadInput, match="needs a model with a tokenizer; give this model calibration inputs"):
        cz.prune(mlp, "unstructured", 0.5, method="wanda")
    with pytest.raises(BadInput, match="exclude pattern 'decoder' matches no"):
        cz.prune(mlp, "neurons", 0.5, data=x, exclude=("decoder",))


def test_an_operation_the_analysis_does_not_know_is_named():
    class Sorted(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = torch.nn.Linear(8, 16), torch.nn.Linear(16, 4)

        def forward(self, x):
            return self.b(torch.sort(self.a(x), dim=-1).values)  # sorting mixes the 16 channels

    with pytest.raises(Unsupported, match=r"does not know these operations.*sort"):
        cz.prune(Sorted(), "neurons", 0.5, data=torch.randn(2, 8))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sparsity", "1.5"], "outside [0, 1)"),
        (["--pattern", "2:3"], "multiple of 3"),
        (["--pattern", "channels"], "finds no channels"),
        (["--pattern", "neurons", "--exclude", "*.output.dense"], "targets leave no neurons"),
        (["--pattern", "neurons", "--sparsity", "0.999"], "the whole layer"),
        (["--method", "wanda", "--calib", "absent.txt"], "absent.txt"),
    ],
)
def test_cli_bad_input_is_exit_2_and_leaves_nothing(tiny_bert, tmp_path, args, message):
    before = {p: file_digest(p) for p in tiny_bert.parent.iterdir()}
    out = tmp_path / "out"
    result = run("prune", str(tiny_bert), "-o", str(out), "--no-eval", *args)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output
    assert not out.exists()
    assert {p: file_digest(p) for p in tiny_bert.parent.iterdir()} == before
