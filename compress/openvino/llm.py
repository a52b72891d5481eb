"""A causal LM as a stateful OpenVINO IR holding compress's own integers, in the folder layout
openvino-genai's LLMPipeline (and optimum-intel's OVModelForCausalLM) load.

How (OpenVINO's own API; optimum-intel's exporter does not install beside compress's transformers):
1. the float twin: a float32 copy of the model whose quantized layers hold their dequantized
   weights (a tied embedding table and output head share one tensor, as in the checkpoint);
2. `openvino.convert_model` traces one step of it, the KV cache passed in and out as tensors
   (`past_key_values.<i>.key|value` -> `present.<i>.key|value`) through a transformers DynamicCache;
3. every float constant that holds a quantized weight (found by its name in the traced graph) is
   replaced by the stored integers dequantized in the graph (compress.openvino.weights): u4 codes
   and zero points with f16 scales, or i8 codes with f32 scales, which OpenVINO's CPU plugin runs
   as compressed-weight FullyConnected and Gather kernels;
4. the cache becomes state with a beam_idx input (compress.openvino.stateful).
The IR is checked against compress's torch model (a prompt with left padding, then token-by-token
decoding) before it is written, with the tokenizer converted by openvino-tokenizers
(openvino_tokenizer.xml / openvino_detokenizer.xml), config.json and generation_config.json beside it.

Held: weight-only INT4 (any group size, symmetric or not) and INT8 Linear layers, INT8 / INT4
embedding tables, float layers. Refused (`llm_refusal`): quantized activations (the IR's matmuls
take float inputs; OpenVINO's own dynamic quantization rounds activations differently).
"""

from __future__ import annotations

import copy
import tempfile
import warnings
from pathlib import Path
from typing import Any

from compress.errors import BadInput, Unsupported

PREFIX = "self.lm."  # how the traced graph names a weight of the wrapped model (its attribute `lm`)
TOKENIZER_FILES = ("openvino_tokenizer.xml", "openvino_detokenizer.xml")


def llm_refusal(activations: str | None) -> str | None:
    """One sentence on why the stateful IR cannot hold this quantization, or None."""
    if activations in ("dynamic", "static"):
        return (
            f"export openvino of a causal LM holds weight-only quantization, not {activations} activations: "
            "quantize with activations none (INT8 or INT4 weights)."
        )
    return None


def float_twin(module) -> tuple[Any, dict[str, Any]]:
    """A float32 copy of `module` with each quantized layer's weight dequantized (tied layers share
    one tensor), and {traced constant name: QuantizedTensor} for the quantized ones."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    from compress.model import replace_module
    from compress.qmodules import QuantEmbedding, QuantLinear, _QuantizedWeight

    class Lookup(nn.Module):  # a float embedding table (scaled as the architecture scales it)
        def __init__(self, weight, scale):
            super().__init__()
            self.weight, self.embed_scale = weight, scale

        def forward(self, ids):
            out = F.embedding(ids, self.weight)
            return out if self.embed_scale is None else out * self.embed_scale.to(out.dtype)

    quantized = {name: m for name, m in module.named_modules() if isinstance(m, _QuantizedWeight)}
    originals = {name: m.qweight for name, m in quantized.items()}  # before .float() touches the scales
    twin = copy.deepcopy(module).eval()
    shared: dict[int, nn.Parameter] = {}
    for name, sub in quantized.items():
        if not isinstance(sub, QuantLinear | QuantEmbedding) or getattr(sub, "activations", "none") != "none":
            raise Unsupported(
                f"OpenVINO export of a causal LM: layer '{name}' has no compressed-weight form."
            )
        qt = originals[name]
        if qt.data.data_ptr() not in shared:
            shared[qt.data.data_ptr()] = nn.Parameter(qt.dequantize(torch.float32), requires_grad=False)
        weight = shared[qt.data.data_ptr()]
        if isinstance(sub, QuantEmbedding):
            scale = None if sub.embed_scale is None else sub.embed_scale.float().clone()
            replace_module(twin, name, Lookup(weight, scale))
        else:
            linear = nn.Linear(sub.in_features, sub.out_features, bias=sub.bias is not None)
            linear.weight = weight
            if sub.bias is not None:
                linear.bias = nn.Parameter(sub.bias.detach().float().clone(), requires_grad=False)
            replace_module(twin, name, linear)
    twin = twin.float()
    return twin, {f"{PREFIX}{name}.weight": qt for name, qt in originals.items()}


def kv_layout(config) -> tuple[int, int, int]:
    """(layers, KV heads, head dim) of a causal LM's cache from its config."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    heads = text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    return text.num_hidden_layers, getattr(text, "num_key_value_heads", None) or heads, head_dim


def _step_module(lm, layers: int):
    """`lm` called once with its KV cache as flat tensors: (ids, mask, positions, *past) ->
    (logits, *present). The cache is a DynamicCache of plain layers, so it keeps every position;
    the model's own masks (causal, sliding window) decide what each position attends to."""
    import torch
    from transformers.cache_utils import DynamicCache, DynamicLayer

    class Step(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lm = lm

        def forward(self, input_ids, attention_mask, position_ids, *past):
            cache = DynamicCache()
            cache.layers = []
            for i in range(layers):
                layer = DynamicLayer()
                layer.lazy_initialization(past[2 * i], past[2 * i + 1])
                layer.keys, layer.values = past[2 * i], past[2 * i + 1]
                cache.layers.append(layer)
            out = self.lm(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                cache=cache,
                use_cache=True,
            )
            present = [t for layer in out.cache.layers for t in (layer.keys, layer.values)]
            return (out.logits, *present)

    return Step().eval()


def convert_causal_lm(module, config) -> tuple[Any, int]:
    """The stateful ov.Model of causal LM `module` on its stored integers; and how many quantized
    weights it holds compressed (each tied table counted once)."""
    import torch

    from compress.openvino.core import require
    from compress.openvino.stateful import make_stateful, past_name, present_name
    from compress.openvino.weights import compress_constants

    ov = require()
    layers, kv_heads, head_dim = kv_layout(config)
    twin, quantized = float_twin(module)
    batch, past, new = 2, 3, 4
    vocab = (config.get_text_config() if hasattr(config, "get_text_config") else config).vocab_size
    example = (
        torch.randint(0, vocab, (batch, new)),
        torch.ones(batch, past + new, dtype=torch.int64),
        torch.arange(past, past + new).expand(batch, new),
        *(torch.zeros(batch, kv_heads, past, head_dim) for _ in range(2 * layers)),
    )
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's notes on the Python branches it fixed
            ov_model = ov.convert_model(_step_module(twin, layers), example_input=example)
    except Exception as exc:  # the converter's and transformers' own exception types
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise Unsupported(f"OpenVINO cannot convert this causal LM with its KV cache ({first}).") from None
    if len(ov_model.outputs) != 1 + 2 * layers:
        raise Unsupported(
            f"OpenVINO export: the model returned {len(ov_model.outputs) - 1} cache tensors, not "
            f"{2 * layers} (two per layer); its cache has a layout this exporter does not know."
        )
    parts = [(i, part) for i in range(layers) for part in ("key", "value")]
    inputs = ["input_ids", "attention_mask", "position_ids", *(past_name(i, p) for i, p in parts)]
    outputs = ["logits", *(present_name(i, p) for i, p in parts)]
    for port, name in zip(ov_model.inputs, inputs, strict=True):
        port.get_tensor().set_names({name})
    for port, name in zip(ov_model.outputs, outputs, strict=True):
        port.get_tensor().set_names({name})
    replaced = compress_constants(ov_model, quantized)
    stored = {qt.data.data_ptr() for qt in quantized.values()}
    found = {quantized[name].data.data_ptr() for name in replaced}
    if found != stored:
        missing = sorted(
            n.removeprefix(PREFIX) for n, qt in quantized.items() if qt.data.data_ptr() not in found
        )
        raise Unsupported(
            f"OpenVINO export: quantized weight '{missing[0]}' is not a constant of the converted graph "
            "(the converter folded it into another operator)."
        )
    make_stateful(ov_model, layers, kv_heads, head_dim)
    return ov_model, len(stored)


def check_stateful(compiled, module, vocab: int, **tolerance: float):
    """Decode with `compiled` (a stateful IR) and with torch `module` and compare the logits: a
    prompt of two rows (one left-padded), then three tokens one at a time through the cache.
    Unsupported with the numbers when they differ by more than `atol + rtol * max|torch logits|`
    (default 1e-4 each: float rounding); returns the ExportCheck."""
    import numpy as np
    import torch

    from compress.kernels import stored_arithmetic
    from compress.onnx.check import ExportCheck
    from compress.openvino.stateful import Stateful, position_ids

    atol, rtol = tolerance.get("atol", 1e-4), tolerance.get("rtol", 1e-4)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (2, 10), generator=generator)
    mask = torch.ones(2, 10, dtype=torch.int64)
    mask[1, :2] = 0  # the second prompt is two tokens shorter, padded on the left
    runner = Stateful(compiled)
    runner.start(2)
    worst, worst_tol, cosine, shapes = 0.0, float("inf"), 1.0, []
    for start, stop in ((0, 7), (7, 8), (8, 9), (9, 10)):  # the prompt, then one token at a time
        got = torch.from_numpy(np.array(runner.step(ids[:, start:stop].numpy(), mask[:, start:stop].numpy())))
        with torch.inference_mode(), stored_arithmetic():
            want = (
                module(
                    input_ids=ids[:, :stop],
                    attention_mask=mask[:, :stop],
                    position_ids=torch.from_numpy(position_ids(mask[:, :stop].numpy())),
                )
                .logits[:, start:stop]
                .float()
            )
        real = mask[:, start:stop].bool()  # logits of padding positions mean nothing
        diff = (got[real] - want[real]).abs().max().item()
        allowed = atol + rtol * want[real].abs().max().item()
        cos = torch.nn.functional.cosine_similarity(got[real].flatten(), want[real].flatten(), dim=0).item()
        if not diff <= allowed:
            raise Unsupported(
                f"the stateful OpenVINO IR differs from torch by up to {diff:.3g} (tolerance {allowed:.3g}) "
                f"on tokens {start}..{stop - 1} of a decoding; the export is not faithful."
            )
        worst, worst_tol, cosine = max(worst, diff), min(worst_tol, allowed), min(cosine, cos)
        shapes.append([2, stop - start])
    return ExportCheck(worst, worst_tol, cosine, shapes)


def export_llm_ir(model, out: Path) -> Path:
    """Write `out/` (openvino_model.xml + .bin, tokenizer IRs, config and tokenizer files) for
    causal LM `model` (a compress Model from its folder), checked against its torch module; returns
    the XML's path."""
    from compress.openvino.core import FAITHFUL, FAITHFUL_CACHE, compile_model
    from compress.openvino.ir import quantization, write_ir

    reason = llm_refusal(quantization(model.module)[1])
    if reason:
        raise BadInput(reason)
    ov_model, held = convert_causal_lm(model.module, model.config)
    compiled = compile_model(ov_model, properties={**FAITHFUL, **FAITHFUL_CACHE})
    vocab = (
        model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    ).vocab_size
    check = check_stateful(compiled, model.module, vocab)  # weight-only: float rounding apart
    del compiled
    source = f"stateful causal LM ({held} quantized weights held as stored integers)"
    with tempfile.TemporaryDirectory(prefix="compress-ov-tok-") as tmp:
        extra = tokenizer_irs(model.tokenizer, Path(tmp))
        ov_model.set_rt_info(str(check.max_abs_diff), ["compress", "check_max_abs_diff"])
        written = write_ir(ov_model, out, model.folder, source, extra=extra, runtime_options=FAITHFUL_CACHE)
    return written


def tokenizer_irs(tokenizer, folder: Path) -> list[Path]:
    """openvino_tokenizer.xml / openvino_detokenizer.xml (+ .bin) of `tokenizer` in `folder`, made
    by openvino-tokenizers (what LLMPipeline reads); Unavailable with the reason when it cannot."""
    from compress.errors import Unavailable
    from compress.openvino.core import require

    if tokenizer is None:
        raise Unavailable(
            "export openvino of a causal LM needs its tokenizer beside the checkpoint (none found)."
        )
    try:
        from openvino_tokenizers import convert_tokenizer
    except ImportError as exc:
        raise Unavailable(
            f"export openvino of a causal LM converts the tokenizer with openvino-tokenizers ({exc}); "
            "pip install openvino-tokenizers"
        ) from None
    try:
        irs = convert_tokenizer(tokenizer, with_detokenizer=True)
    except Exception as exc:  # openvino-tokenizers' own exception types
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise Unavailable(f"openvino-tokenizers cannot convert this tokenizer ({first}).") from None
    paths = []
    for ir, name in zip(irs, TOKENIZER_FILES, strict=True):
        require().save_model(ir, str(folder / name))
        paths += [folder / name, (folder / name).with_suffix(".bin")]
    return paths
