"""Streaming a checkpoint tensor by tensor gives the same file content as the in-memory path."""

from __future__ import annotations

import pytest
import torch

import compress as cz
from compress.api import compress_checkpoint
from compress.checkpoint import SafetensorsFile
from compress.errors import BadInput
from compress.passes.quantize import QuantizeConfig
from compress.targets import Targets


@pytest.mark.parametrize(
    "cfg",
    [
        QuantizeConfig(scheme="int8", targets=Targets(types=("linear", "embedding"))),
        QuantizeConfig(scheme="int4", group_size=16, symmetric=False),
    ],
)
def test_streamed_file_holds_the_same_tensors_as_the_in_memory_path(tiny_bert, tmp_path, cfg):
    streamed = compress_checkpoint(tiny_bert, cfg, tmp_path / "s")
    assert streamed.model is None  # nothing was built in memory
    in_memory = cz.apply(tiny_bert, cfg).save(tmp_path / "m")
    a, b = SafetensorsFile(streamed.path), SafetensorsFile(in_memory)
    assert a.metadata["compress.tensors"] == b.metadata["compress.tensors"]
    for name in b.names():
        assert torch.equal(a.read(name), b.read(name)), name


def test_streamed_checkpoint_loads_and_runs(tiny_llama, tmp_path):
    art = compress_checkpoint(tiny_llama, QuantizeConfig(scheme="int4", group_size=16), tmp_path / "q")
    model = cz.load(art.path)
    out = model.module(input_ids=torch.tensor([[5, 6, 7]])).logits
    assert out.shape == (1, 3, model.config.vocab_size)
    assert "lm_head.weight" not in SafetensorsFile(art.path).names()


def test_bare_checkpoint_quantizes_every_float_matrix(bare_checkpoint, tmp_path):
    art = compress_checkpoint(bare_checkpoint, QuantizeConfig(), tmp_path / "q")
    assert set(art.changes) == {"layer1.weight", "layer2.weight"}
    f = SafetensorsFile(art.path)
    assert f.tensors["layer1.weight"].dtype == "I8"
    assert f.tensors["layer1.bias"].dtype == "F32" and f.tensors["steps"].dtype == "I64"
    assert cz.load(art.path).family == "tensors"


def test_quantizing_a_compressed_checkpoint_is_refused(tiny_bert, tmp_path):
    art = compress_checkpoint(tiny_bert, QuantizeConfig(), tmp_path / "q")
    with pytest.raises(BadInput, match="already compressed"):
        compress_checkpoint(art.path, QuantizeConfig(), tmp_path / "qq")
    assert not (tmp_path / "qq").exists()


def test_output_into_the_input_folder_is_refused(tiny_bert):
    before = tiny_bert.read_bytes()
    with pytest.raises(BadInput, match="input's own folder"):
        compress_checkpoint(tiny_bert, QuantizeConfig(), tiny_bert.parent)
    assert tiny_bert.read_bytes() == before
