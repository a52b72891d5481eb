"""Block-by-block processing: same results as running the whole model, with the weights read lazily."""

from __future__ import annotations

import copy

import torch

import compress as cz
from compress.calibration import Calibration, draw
from compress.deferred import load_deferred
from compress.passes.quantize.gptq import gptq_int4
from compress.passes.quantize.rtn import pack_int4_tensor
from compress.qmodules import QuantLinear, quantized_module
from compress.sequential import find_blocks, run_blocks
from compress.testing import tiny_tokenizer

TEXT = " ".join(
    ["the team will fix the bug in the release today and send the report by email to the list"] * 40
)


def _calibration(tmp_path, samples: int = 6, seq_len: int = 24):
    (tmp_path / "calib.txt").write_text(TEXT)
    settings = Calibration(data=str(tmp_path / "calib.txt"), samples=samples, seq_len=seq_len)
    return draw(settings, tiny_tokenizer())


def test_block_replay_reproduces_the_full_forward_pass(tiny_llama, tmp_path):
    model = cz.load(tiny_llama).module
    data = _calibration(tmp_path)
    batches = data.batches(3)
    outputs = []

    def keep_output(name, block, inputs):
        if name.endswith(".1"):
            outputs.extend(inputs.run())

    names = run_blocks(model, batches, keep_output)
    assert names == ["model.layers.0", "model.layers.1"]
    expected = []
    hook = model.model.layers[1].register_forward_hook(lambda m, a, out: expected.append(out))
    with torch.no_grad():
        for batch in batches:
            model(**batch, use_cache=False)
    hook.remove()
    for got, want in zip(outputs, expected, strict=True):
        assert torch.allclose(got, want, atol=1e-6)


def _all_at_once_gptq(module, batches, group_size: int):
    """Reference: for each decoder layer in turn, statistics from full forward passes of the whole
    model (earlier layers already quantized), then GPTQ on that layer's Linear layers."""
    for layer in module.model.layers:
        linears = {n: m for n, m in layer.named_modules() if isinstance(m, torch.nn.Linear)}
        grams = {n: torch.zeros(m.in_features, m.in_features) for n, m in linears.items()}

        def accumulate(name, grams=grams):
            def hook(_m, args):
                x = args[0].reshape(-1, args[0].shape[-1]).float()
                grams[name] += x.T @ x

            return hook

        hooks = [m.register_forward_pre_hook(accumulate(n)) for n, m in linears.items()]
        with torch.no_grad():
            for batch in batches:
                module(**batch, use_cache=False)
        for h in hooks:
            h.remove()
        for name, linear in linears.items():
            w = linear.weight.detach()
            codes, scale, zero = gptq_int4(w, grams[name], group_size, True)
            qt = pack_int4_tensor(codes, scale, zero, tuple(w.shape), w.dtype, group_size, True)
            parent, _, child = name.rpartition(".")
            setattr(layer.get_submodule(parent), child, quantized_module(linear, qt))
    return module


def test_sequential_gptq_gives_the_same_weights_as_the_all_at_once_path(tiny_llama, tmp_path):
    model = cz.load(tiny_llama)
    data = _calibration(tmp_path)
    gptq = cz.quantize(model, "int4", group_size=16, method="gptq", data=data, embeddings="float")
    sequential = gptq.model.module
    reference = _all_at_once_gptq(copy.deepcopy(model.module), data.batches(4096 // 24), 16)
    compared = 0
    for name, module in sequential.named_modules():
        if isinstance(module, QuantLinear):
            want = reference.get_submodule(name)
            assert torch.equal(module.qweight.dequantize(), want.qweight.dequantize()), name
            compared += 1
    assert compared == 14


def test_reading_weights_block_by_block_gives_the_same_model(tiny_llama, tmp_path):
    data = _calibration(tmp_path)
    lazily = cz.quantize(tiny_llama, "int4", group_size=16, method="awq", data=data).model.module
    in_memory = cz.quantize(cz.load(tiny_llama), "int4", group_size=16, method="awq", data=data).model.module
    for (name, a), (_, b) in zip(lazily.state_dict().items(), in_memory.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert lazily.lm_head.weight is lazily.model.embed_tokens.weight  # ties survive lazy reading


def test_deferred_weights_are_meta_until_read_and_go_back_to_disk(tiny_llama):
    model, weights = load_deferred(tiny_llama, tokenizer=False)
    module = model.module
    assert all(p.is_meta for p in module.parameters())
    blocks = [name for name, _ in find_blocks(module)]
    weights.load(exclude=blocks)
    assert not module.model.embed_tokens.weight.is_meta
    assert module.model.layers[0].mlp.up_proj.weight.is_meta
    weights.release(keep=())
    assert module.model.embed_tokens.weight.is_meta and module.lm_head.weight.is_meta
    weights.finish()
    assert not any(p.is_meta for p in module.parameters())
    reference = cz.load(tiny_llama).module
    for (name, a), (_, b) in zip(module.state_dict().items(), reference.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
