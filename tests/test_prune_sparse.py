"""Unstructured and N:M pruning, and the sparse storage that makes the file shrink."""

from __future__ import annotations

import pytest
import torch

import compress as cz
from compress.checkpoint import SafetensorsFile
from compress.errors import BadInput
from compress.formats import CODECS, read_compression_info
from compress.formats.sparse import SparseCodec, pack_mask, sparsify_state, unpack_mask
from compress.passes.quantize.rtn import quantize_int8
from compress.qmodules import QuantLinear
from compress.testing import tiny_mlp


@pytest.mark.parametrize("numel", [1, 7, 8, 9, 64, 1001])
def test_bitmask_round_trip(numel):
    mask = torch.rand(numel) > 0.5
    packed = pack_mask(mask)
    assert packed.dtype == torch.uint8 and packed.numel() == (numel + 7) // 8
    assert torch.equal(unpack_mask(packed, numel), mask)


def test_sparse_codec_is_exact_for_floats_and_int8_codes():
    w = torch.randn(16, 24)
    w[torch.rand_like(w) < 0.6] = 0
    parts, meta = SparseCodec.encode("w", w, None)
    assert parts["w"].numel() == int((w != 0).sum()) and meta["shape"] == [16, 24]
    assert sorted(CODECS["sparse"].part_names("w", meta)) == sorted(parts)
    assert torch.equal(SparseCodec.from_parts("w", parts, meta), w)
    qt = quantize_int8(w)
    parts, meta = SparseCodec.encode("w", qt.data, qt.meta())
    parts["w_scale"] = qt.scale
    back = SparseCodec.from_parts("w", parts, meta)
    assert torch.equal(back.dequantize(), qt.dequantize())


def test_only_mostly_zero_weights_are_stored_sparse():
    dense, sparse = torch.randn(32, 32), torch.randn(32, 32)
    sparse[:, ::2] = 0
    tensors, encoded = sparsify_state({"a": dense, "b": sparse, "bias": torch.zeros(32)}, {})
    assert set(encoded) == {"b"} and tensors["a"] is dense and "b_mask" in tensors


def test_corrupt_sparse_parts_are_bad_input():
    w = torch.randn(8, 8)
    w[:, :4] = 0
    parts, meta = SparseCodec.encode("w", w, None)
    with pytest.raises(
        BadInput, match=r"values of encoded weight 'w' is float32 \[31\].* says float32 \[32\]"
    ):
        SparseCodec.from_parts("w", {**parts, "w": parts["w"][:-1]}, meta)
    with pytest.raises(BadInput, match=r"part 'w_mask' of encoded weight 'w' is uint8 \[7\]"):
        SparseCodec.from_parts("w", {**parts, "w_mask": parts["w_mask"][:-1]}, meta)


def test_magnitude_pruning_per_layer_and_global():
    mlp = tiny_mlp()
    art = cz.prune(mlp, "unstructured", 0.5)
    for name in ("0.weight", "2.weight", "4.weight"):
        assert art.changes[name]["sparsity"] == pytest.approx(0.5)
    with torch.no_grad():
        mlp[0].weight.mul_(0.01)  # a layer of small weights loses most of them under one global ranking
    art = cz.prune(mlp, "unstructured", 0.25, scope="global")
    assert art.changes["0.weight"]["sparsity"] > 0.75 > 0.05 > art.changes["2.weight"]["sparsity"]
    assert art.stats["prune.sparsity"] == pytest.approx(0.25, abs=0.01)


def test_n_m_keeps_n_of_every_m_along_each_row():
    art = cz.prune(tiny_mlp(), "2:4")
    w = art.model.module[2].weight.reshape(64, -1, 4)
    assert torch.all((w != 0).sum(dim=2) == 2)


def test_wanda_keeps_the_weights_large_activations_flow_through():
    mlp = tiny_mlp()
    x = torch.randn(64, 32)
    x[:, 0] *= 100  # feature 0 is huge: wanda keeps its column even where the weights are small
    with torch.no_grad():
        mlp[0].weight[:, 0] *= 0.05
    magnitude = cz.prune(mlp, "unstructured", 0.5).model.module[0].weight
    wanda = cz.prune(mlp, "unstructured", 0.5, method="wanda", data=x).model.module[0].weight
    assert (magnitude[:, 0] != 0).float().mean() < 0.2
    assert (wanda[:, 0] != 0).float().mean() > 0.8


def test_unstructured_file_shrinks_and_round_trips(tiny_bert, tmp_path):
    art = cz.prune(tiny_bert, "unstructured", 0.5, embeddings=True)
    path = art.save(tmp_path / "s")
    assert path.stat().st_size < 0.6 * tiny_bert.stat().st_size
    info = read_compression_info(SafetensorsFile(path).metadata, "x")
    assert info.tensors["encoder.layer.0.intermediate.dense.weight"]["scheme"] == "sparse"
    back = cz.load(path).module
    for name, t in art.model.module.state_dict().items():
        assert torch.equal(back.state_dict()[name], t), name


def test_prune_then_quantize_in_one_recipe_stays_sparse(tiny_bert, tmp_path):
    recipe = [cz.Prune(pattern="unstructured", sparsity=0.5), cz.Quantize(scheme="int8")]
    art = cz.apply(tiny_bert, recipe)
    path = art.save(tmp_path / "pq")
    info = read_compression_info(SafetensorsFile(path).metadata, "x")
    meta = info.tensors["encoder.layer.1.output.dense.weight"]
    assert meta["scheme"] == "sparse" and meta["inner"]["scheme"] == "int8"
    assert [step["kind"] for step in info.recipe] == ["prune", "quantize"]
    back = cz.load(path)
    assert isinstance(back.module.encoder.layer[1].output.dense, QuantLinear)
    ids = torch.randint(5, 60, (2, 7))
    with torch.inference_mode():
        expected = art.model.module(input_ids=ids).last_hidden_state
        assert torch.equal(back.module(input_ids=ids).last_hidden_state, expected)
    report = cz.evaluate(
        path,
        tiny_bert,
        devices=("cpu",),
        limit=8,
        latency=cz.LatencySettings(budget_s=0.2, batch_size=2, seq_len=16, min_rounds=2),
    )
    assert report.sparsity["overall"] > 0.3
    assert report.accuracy.status == "ok"
    assert any("no speedup is expected" in note for note in report.notes)
    assert report.latency[0]["ideal_speedup"] == pytest.approx(1.0)
