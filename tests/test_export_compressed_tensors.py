"""The compressed-tensors export: transformers loads it on CPU and computes what compress.load computes.

vLLM, the format's main consumer, needs a GPU and does not run here; offline we check that the config
validates with compressed-tensors' own classes, that the package's own unpacking gives back compress's
integers, and that its own compressor writes the same tensors from the same integers.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import compress as cz
from compress.errors import BadInput
from compress.exporters import export_config_from_dict, get_exporter, run_exports
from compress.kernels import stored_arithmetic
from compress.qmodules import QuantLinear
from compress.testing import write_tiny_bert, write_tiny_llama

pytest.importorskip("compressed_tensors")
CT = "compressed-tensors"
PROMPT = torch.tensor([[2, 10, 20, 30, 40, 3]])
# compress may run an integer kernel (torch._weight_int4pack_mm_for_cpu for a few rows) where
# transformers dequantizes: the logits then agree to float rounding, not bit for bit.
FLOAT_ROUNDING = 1e-5


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ct-src")
    calib = root / "calib.txt"
    calib.write_text(" ".join(["the team will send the report by email today, please check the list"] * 40))
    return {
        "llama": write_tiny_llama(root / "llama"),
        "wide": write_tiny_llama(root / "wide", hidden_size=128),
        "untied": write_tiny_llama(root / "untied", tie=False),
        "bert": write_tiny_bert(root / "bert"),
        "calib": calib,
    }


def quantize_and_export(models: dict, tmp_path: Path, source: str, settings: dict) -> Path:
    settings = {"embeddings": "float", **settings}  # the format holds Linear layers only
    if settings.pop("calibrated", False):
        settings.update(data=str(models["calib"]), calib={"samples": 4, "seq_len": 16})
    out = tmp_path / "out"
    cz.quantize(models[source], **settings).save(out)
    written = run_exports(out, [export_config_from_dict({"format": CT})])
    assert out / CT / "model.safetensors" in written and out / CT / "tokenizer.json" in written
    return out


def load_exported(out: Path, auto, asymmetric: bool):
    from transformers import CompressedTensorsConfig

    # transformers 5.25 with compressed-tensors 0.20.1 cannot load asymmetric pack-quantized
    # checkpoints by default, the package's own output included (its meta-device compression leaves
    # the zero point unpacked: llm-compressor issue 1618); its dequantize path loads them.
    extra = {"quantization_config": CompressedTensorsConfig(dequantize=True)} if asymmetric else {}
    return auto.from_pretrained(out / CT, **extra).eval()


def quantization_config(out: Path) -> dict:
    return json.loads((out / CT / "config.json").read_text())["quantization_config"]


def assert_same_weights(reference, exported) -> int:
    """Every quantized layer's weight as transformers decompressed it equals compress's, bit for bit."""
    count = 0
    for name, layer in reference.named_modules():
        if isinstance(layer, QuantLinear):
            assert torch.equal(layer.qweight.dequantize(torch.float32), exported.get_submodule(name).weight)
            count += 1
    return count


def greedy(model) -> list[int]:
    out = model.generate(PROMPT, max_new_tokens=32, min_new_tokens=32, do_sample=False, pad_token_id=0)
    return out[0, PROMPT.shape[1] :].tolist()


CAUSAL = {
    "int4-sym-g32": ("llama", {"scheme": "int4", "group_size": 32}),
    "int4-sym-g128": ("wide", {"scheme": "int4", "group_size": 128}),
    "int4-asym-g32": ("llama", {"scheme": "int4", "group_size": 32, "symmetric": False}),
    "int4-asym-g128": ("wide", {"scheme": "int4", "group_size": 128, "symmetric": False}),
    "int4-hqq-g64": ("wide", {"scheme": "int4", "group_size": 64, "method": "hqq"}),
    "int4-untied-lm-head": ("untied", {"scheme": "int4", "group_size": 32}),
    "int4-keep-int8": ("llama", {"scheme": "int4", "group_size": 32, "keep_int8": ("*.mlp.down_proj",)}),
    "w8a16": ("llama", {"scheme": "int8"}),
    "w8a16-7bit": ("llama", {"scheme": "int8", "weight_bits": 7}),
    "w8a8-dynamic": ("llama", {"scheme": "int8", "activations": "dynamic"}),
    "w8a8-static": ("llama", {"scheme": "int8", "activations": "static", "smooth": 0, "calibrated": True}),
    "w8a8-smoothquant-folded": (
        "llama",
        {
            "scheme": "int8",
            "activations": "static",
            "smooth": 0.5,
            "exclude": ("*o_proj", "*down_proj"),
            "calibrated": True,
        },
    ),
}


@pytest.mark.parametrize("case", list(CAUSAL))
def test_causal_lm_loads_in_transformers_and_generates_what_compress_generates(case, models, tmp_path):
    from compressed_tensors.quantization import QuantizationConfig
    from transformers import AutoModelForCausalLM

    source, settings = CAUSAL[case]
    out = quantize_and_export(models, tmp_path, source, settings)
    config = QuantizationConfig.model_validate(quantization_config(out))
    activations = settings.get("activations", "none")
    assert config.format == ("int-quantized" if activations != "none" else "pack-quantized")
    bits = {4 if settings["scheme"] == "int4" else 8} | ({8} if "keep_int8" in settings else set())
    assert {s.weights.num_bits for s in config.config_groups.values()} == bits
    reference = cz.load(out).module
    exported = load_exported(out, AutoModelForCausalLM, asymmetric=not settings.get("symmetric", True))
    with torch.no_grad(), stored_arithmetic():  # compress's CPU kernels would round to bfloat16
        got, want = exported(PROMPT).logits, reference(PROMPT).logits
        assert greedy(exported) == greedy(reference)
    assert assert_same_weights(reference, exported) >= 10
    # dynamic activations: transformers' compressed-tensors rounds each token with max|x| / 127.5,
    # compress (and vLLM's kernel) with max|x| / 127; test_dynamic_rounding_is_the_only_difference
    bound = 0.02 if activations == "dynamic" else FLOAT_ROUNDING
    assert float((got - want).abs().max()) <= bound


def test_config_groups_follow_the_layers(models, tmp_path):
    out = quantize_and_export(models, tmp_path, "llama", CAUSAL["int4-keep-int8"][1])
    config = quantization_config(out)
    int4, int8 = config["config_groups"].values()
    assert int4["weights"]["group_size"] == 32 and int8["weights"]["strategy"] == "channel"
    assert int8["targets"] == ["model.layers.0.mlp.down_proj", "model.layers.1.mlp.down_proj"]
    assert len(int4["targets"]) == 12 and config["ignore"] == ["lm_head"]  # tied to the float embedding
    untied = quantization_config(quantize_and_export(models, tmp_path / "u", "untied", {"scheme": "int8"}))
    assert untied["config_groups"]["group_0"]["targets"] == ["Linear"] and untied["ignore"] == []


ENCODER = {
    "w8a16": {"scheme": "int8"},
    "int4-asym-g32": {"scheme": "int4", "group_size": 32, "symmetric": False},
    "w8a8-static": {"scheme": "int8", "activations": "static", "smooth": 0, "calibrated": True},
    "w8a8-dynamic": {"scheme": "int8", "activations": "dynamic"},
}


@pytest.mark.parametrize("case", list(ENCODER))
def test_encoder_outputs_equal_compress_within_float_rounding(case, models, tmp_path):
    from transformers import AutoModel

    settings = ENCODER[case]
    out = quantize_and_export(models, tmp_path, "bert", settings)
    reference = cz.load(out).module
    exported = load_exported(out, AutoModel, asymmetric=not settings.get("symmetric", True))
    with torch.no_grad(), stored_arithmetic():
        got, want = exported(PROMPT).last_hidden_state, reference(PROMPT).last_hidden_state
    assert assert_same_weights(reference, exported) == 13  # 2 layers x 6, and the pooler
    bound = 0.02 if settings.get("activations") == "dynamic" else FLOAT_ROUNDING
    assert float((got - want).abs().max()) <= bound


@pytest.mark.parametrize("source", ["bert", "llama"])
def test_dynamic_rounding_is_the_only_difference(source, models, tmp_path, monkeypatch):
    """With compress's per-token rounding switched to compressed-tensors' max|x| / 127.5, the
    exported model computes what compress computes, to float rounding."""
    from transformers import AutoModel, AutoModelForCausalLM

    import compress.qmodules as qmodules

    def ct_rounding(x):
        scale = x.abs().amax(dim=-1, keepdim=True) / 127.5
        return torch.round(torch.clamp(x / scale, -128, 127)) * scale

    out = quantize_and_export(models, tmp_path, source, {"scheme": "int8", "activations": "dynamic"})
    monkeypatch.setattr(qmodules, "per_token_fake_quant", ct_rounding)
    auto = AutoModelForCausalLM if source == "llama" else AutoModel
    exported = load_exported(out, auto, asymmetric=False)
    with torch.no_grad(), stored_arithmetic():
        got, want = exported(PROMPT)[0], cz.load(out).module(PROMPT)[0]
    assert float((got - want).abs().max()) <= 1e-5


@pytest.mark.parametrize(
    "settings",
    [{"scheme": "int4", "group_size": 32}, {"scheme": "int4", "group_size": 32, "symmetric": False}, {}],
)
def test_packed_tensors_unpack_to_compress_integers(settings, models, tmp_path):
    """The package's own unpacking gives compress's codes and zero points, and its own compressor
    writes the very same tensors from compress's integers and scales."""
    from compressed_tensors.compressors.pack_quantized.base import PackedQuantizationCompressor
    from compressed_tensors.compressors.pack_quantized.helpers import unpack_from_int32
    from compressed_tensors.quantization import QuantizationScheme
    from safetensors.torch import load_file

    settings = settings or {"scheme": "int8"}
    out = quantize_and_export(models, tmp_path, "llama", settings)
    tensors = load_file(out / CT / "model.safetensors")
    group = next(iter(quantization_config(out)["config_groups"].values()))
    scheme = QuantizationScheme.model_validate({**group, "targets": ["Linear"]})
    bits = scheme.weights.num_bits
    checked = 0
    for name, layer in cz.load(out).module.named_modules():
        if not isinstance(layer, QuantLinear):
            continue
        qt = layer.qweight
        mine = {k.removeprefix(name + "."): v for k, v in tensors.items() if k.startswith(name + ".")}
        shape = mine["weight_shape"]
        assert shape.tolist() == [qt.rows, qt.cols] and mine["weight_packed"].dtype == torch.int32
        signed = qt.codes().to(torch.int16) - (8 if bits == 4 else 0)
        assert torch.equal(unpack_from_int32(mine["weight_packed"], bits, shape).to(torch.int16), signed)
        zero = None
        if not qt.symmetric:
            zero = (qt.zero_points().to(torch.int16) - 8).to(torch.int8)
            groups_shape = (qt.rows, qt.groups)
            assert torch.equal(unpack_from_int32(mine["weight_zero_point"], 4, groups_shape, 0), zero)
        scale = qt.scale.float().reshape(qt.rows, -1)
        state = {"weight": qt.dequantize(torch.float32), "weight_scale": scale}
        if zero is not None:
            state["weight_zero_point"] = zero
        theirs = PackedQuantizationCompressor.compress(state, scheme)
        assert set(theirs) == set(mine)
        assert all(torch.equal(theirs[k], mine[k]) for k in mine)
        checked += 1
    assert checked == 14


def test_refused_before_any_work_in_one_sentence():
    spec = get_exporter(CT)
    linear = cz.Targets()  # the format holds Linear layers only (quantize's default adds embeddings)
    quantize = cz.Quantize(scheme="int4", targets=linear)
    cases = [
        ([cz.Prune(pattern="2:4"), quantize], "2:4"),
        ([cz.Prune(pattern="unstructured", sparsity=0.5), quantize], "sparse"),
        ([cz.Prune(pattern="neurons", sparsity=0.25), quantize], "config.json"),
        ([cz.Quantize(scheme="int8")], "embedding"),
        ([], "quantize pass"),
        (
            [cz.Quantize(scheme="int8", activations="static", targets=linear)],
            "SmoothQuant",
        ),  # smoothing searched by default
    ]
    for passes, words in cases:
        with pytest.raises(BadInput, match=words) as caught:
            spec.check(passes, spec.config())
        message = str(caught.value)
        assert "\n" not in message and message.endswith(".") and ". " not in message
    static = cz.Quantize(scheme="int8", activations="static", smooth=0, targets=linear)
    spec.check([static], spec.config())  # faithful to compressed-tensors' asymmetric int8: allowed
    excluded = cz.Targets(exclude=("*o_proj", "*down_proj"))
    spec.check([cz.Quantize(scheme="int8", activations="static", targets=excluded)], spec.config())


def test_smoothing_that_cannot_be_folded_is_refused_naming_the_layer(models, tmp_path):
    settings = {"scheme": "int8", "activations": "dynamic", "smooth": 0.5}
    out = tmp_path / "out"
    calib = {"samples": 4, "seq_len": 16}
    cz.quantize(models["llama"], data=str(models["calib"]), calib=calib, embeddings="float", **settings).save(
        out
    )
    with pytest.raises(BadInput, match=r"layer 'model\.layers\.0\.mlp\.down_proj' carries SmoothQuant"):
        get_exporter(CT).export(out, get_exporter(CT).config(), None)
    assert not (out / CT).exists()


def test_smoothing_into_a_norm_that_feeds_the_residual_is_refused(models, tmp_path):
    out = tmp_path / "out"
    settings = {
        "activations": "dynamic",
        "smooth": 0.5,
        "include": ("*query", "*key", "*value"),
        "embeddings": "float",
    }
    cz.quantize(
        models["bert"], "int8", data=str(models["calib"]), calib={"samples": 4, "seq_len": 16}, **settings
    ).save(out)
    with pytest.raises(BadInput, match="another path reads those norms' outputs"):
        get_exporter(CT).export(out, get_exporter(CT).config(), None)
    assert not (out / CT).exists()


def test_a_float_checkpoint_has_nothing_to_export(models):
    with pytest.raises(BadInput, match="not a quantized compress checkpoint"):
        get_exporter(CT).export(models["llama"].parent, get_exporter(CT).config(), None)
    assert not (models["llama"].parent / CT).exists()
