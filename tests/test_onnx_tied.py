"""A tied embedding is stored once in the ONNX export, and the graph still computes the same logits."""

from __future__ import annotations

import numpy as np
import onnx
import torch

import compress as cz
from compress.onnx import check_export, export_onnx, open_session
from compress.onnx.export import share_tied_weights
from compress.onnx.module import OrtModule
from compress.onnx.samples import export_samples
from compress.testing import write_tiny_llama


def exported(tmp_path, tie: bool):
    model = cz.load(write_tiny_llama(tmp_path / f"llama-{tie}", tie=tie))
    sample, checks = export_samples(None)(model)
    graph = export_onnx(model.module, sample, tmp_path / f"onnx-{tie}", share_tied=True)
    return model, sample, checks, graph


def table_copies(path, vocab: int, hidden: int) -> int:
    shapes = [tuple(i.dims) for i in onnx.load(str(path)).graph.initializer]
    return sum(s in ((vocab, hidden), (hidden, vocab)) for s in shapes)


def test_tied_lm_head_is_stored_once_and_logits_agree(tmp_path):
    model, sample, checks, graph = exported(tmp_path, tie=True)
    config = model.module.config
    assert table_copies(graph.path, config.vocab_size, config.hidden_size) == 1
    ops = [n.op_type for n in onnx.load(str(graph.path)).graph.node]
    assert "Transpose" in ops
    check = check_export(graph.path, model.module, checks)
    assert check.max_abs_diff < 1e-4
    # The perplexity task calls a causal LM with input_ids only: OrtModule adds the mask of ones.
    ids = sample["input_ids"][:1, :5]
    want = model.module(input_ids=ids).logits
    got = OrtModule(graph.path)(input_ids=ids).logits
    assert torch.allclose(got, want, atol=1e-4)


def test_untied_weights_are_left_alone(tmp_path):
    model, _, checks, graph = exported(tmp_path, tie=False)
    config = model.module.config
    assert table_copies(graph.path, config.vocab_size, config.hidden_size) == 2
    assert share_tied_weights(graph.path) == 0
    check_export(graph.path, model.module, checks)


def test_sharing_again_finds_nothing_and_sessions_open(tmp_path):
    _, sample, _, graph = exported(tmp_path, tie=True)
    assert share_tied_weights(graph.path) == 0  # already shared: no transposed copy is left
    session = open_session(graph.path)
    feeds = {k: v.numpy() for k, v in sample.items()}
    assert np.isfinite(session.run(None, feeds)[0]).all()
