"""Pruning the real all-MiniLM-L6-v2 (read-only; outputs go to tmp_path)."""

from __future__ import annotations

import pytest

import compress as cz

pytestmark = pytest.mark.real_model


def test_minilm_ffn_neurons_shrink_and_the_config_says_so(minilm, tmp_path):
    art = cz.prune(minilm, "neurons", 0.3)
    assert art.config.intermediate_size == 1075  # 70% of 1536
    for layer in art.model.module.encoder.layer:
        assert tuple(layer.intermediate.dense.weight.shape) == (1075, 384)
        assert tuple(layer.output.dense.weight.shape) == (384, 1075)
    path = art.save(tmp_path / "n")
    removed = 6 * 461 * (384 + 384 + 1)  # per layer: 461 rows of the up projection, its bias, 461 columns
    assert minilm.stat().st_size - path.stat().st_size == pytest.approx(4 * removed, abs=20_000)
    assert cz.load(path).module.encoder.layer[5].output.dense.in_features == 1075


def test_minilm_unstructured_half_is_at_most_six_tenths_of_the_file(minilm, tmp_path):
    path = cz.prune(minilm, "unstructured", 0.5, embeddings=True).save(tmp_path / "u")
    assert path.stat().st_size <= 0.6 * minilm.stat().st_size
