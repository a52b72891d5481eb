"""Saving artifacts and loading checkpoints back, through one loader for float and compressed files."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModel, AutoModelForCausalLM

import compress as cz
from compress.checkpoint import SafetensorsFile
from compress.errors import BadInput
from compress.formats import read_compression_info
from compress.testing import assert_similar, tiny_cnn, tiny_mlp


def test_loader_matches_transformers_for_a_float_checkpoint(tiny_bert):
    ours = cz.load(tiny_bert)
    ref = AutoModel.from_pretrained(tiny_bert.parent).eval()
    batch = ours.tokenizer(["free money now", "team meeting report"], return_tensors="pt", padding=True)
    with torch.inference_mode():
        assert torch.allclose(
            ours.module(**batch).last_hidden_state, ref(**batch).last_hidden_state, atol=1e-6
        )
    assert ours.family == "encoder"


def test_tied_causal_lm_loads_like_transformers(tiny_llama):
    ours = cz.load(tiny_llama)
    ref = AutoModelForCausalLM.from_pretrained(tiny_llama.parent).eval()
    ids = torch.randint(0, 60, (1, 10))
    with torch.inference_mode():
        assert torch.allclose(ours.module(input_ids=ids).logits, ref(input_ids=ids).logits, atol=1e-5)
    assert ours.family == "causal-lm"


@pytest.mark.parametrize(
    ("scheme", "extra"), [("int8", {}), ("int4", {"group_size": 16, "symmetric": False})]
)
def test_save_and_load_round_trip_gives_identical_outputs(tiny_bert, tmp_path, scheme, extra):
    art = cz.quantize(tiny_bert, scheme=scheme, embeddings=True, **extra)
    path = art.save(tmp_path / "out")
    assert path == tmp_path / "out" / "model.safetensors"
    assert (tmp_path / "out" / "config.json").exists() and (tmp_path / "out" / "tokenizer.json").exists()
    back = cz.load(tmp_path / "out")
    batch = back.tokenizer(["click now to win cash"], return_tensors="pt")
    with torch.inference_mode():
        expected = art.model.module(**batch).last_hidden_state
        assert torch.equal(back.module(**batch).last_hidden_state, expected)
    info = read_compression_info(SafetensorsFile(path).metadata, "x")
    assert info.recipe[0]["scheme"] == scheme
    assert len(info.source_sha256) == 64
    assert {m["scheme"] for m in info.tensors.values()} == {scheme}


def test_int8_weights_are_stored_as_int8_and_int4_packed(tiny_bert, tmp_path):
    int8 = cz.quantize(tiny_bert, scheme="int8").save(tmp_path / "a")
    int4 = cz.quantize(tiny_bert, scheme="int4", group_size=32).save(tmp_path / "b")
    f8, f4 = SafetensorsFile(int8), SafetensorsFile(int4)
    name = "encoder.layer.0.intermediate.dense.weight"
    assert f8.tensors[name].dtype == "I8" and f8.tensors[name].shape == (128, 64)
    assert f4.tensors[name].dtype == "U8" and f4.tensors[name].shape == (128, 32)
    assert f4.tensors[name + "_scale"].dtype == "F16"


def test_tied_weights_are_stored_once_and_retied_on_load(tiny_llama, tmp_path):
    art = cz.quantize(tiny_llama, embeddings=True)
    path = art.save(tmp_path / "q")
    names = SafetensorsFile(path).names()
    assert "lm_head.weight" not in names and "model.embed_tokens.weight" in names
    back = cz.load(path).module
    assert back.lm_head.weight is back.model.embed_tokens.weight
    ids = torch.randint(0, 60, (1, 8))
    with torch.inference_mode():
        assert torch.equal(back(input_ids=ids).logits, art.model.module(input_ids=ids).logits)


def test_user_module_round_trip_with_a_fresh_skeleton(tmp_path):
    cnn = tiny_cnn()
    assert set(cz.quantize(cnn).changes) == {"head.weight"}  # convolutions only on request
    x = torch.randn(2, 1, 16, 16)
    conv = cz.apply(cnn, cz.Quantize(targets=cz.Targets(types=("conv", "linear"))))
    path = conv.save(tmp_path / "cnn")
    back = cz.load(path, module=tiny_cnn(seed=5))
    assert torch.equal(back.module(x), conv.model.module(x))
    assert_similar(back.module(x), cnn(x), min_cosine=0.999)


def test_mlp_without_config_saves_a_bare_checkpoint(tmp_path):
    path = cz.quantize(tiny_mlp()).save(tmp_path / "mlp")
    assert cz.load(path).family == "tensors"
    loaded = cz.load(path, module=tiny_mlp(seed=3))
    x = torch.randn(2, 32)
    assert_similar(loaded.module(x), tiny_mlp()(x), min_cosine=0.999)


def test_loading_into_the_wrong_module_is_a_clear_error(tiny_bert, tmp_path):
    path = cz.quantize(tiny_mlp()).save(tmp_path / "mlp")
    with pytest.raises(BadInput, match=r"does not fit|has no layer|lacks"):
        cz.load(path, module=tiny_cnn())


def test_folder_without_weights_or_with_pickles(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInput, match=r"has no model\.safetensors"):
        cz.load(tmp_path / "empty")
    (tmp_path / "pt").mkdir()
    torch.save({}, tmp_path / "pt" / "pytorch_model.bin")
    with pytest.raises(BadInput, match="pickle files are not read"):
        cz.load(tmp_path / "pt")
