"""Decoders: a causal LM ready to generate greedily on one device and runtime, timed as it goes.

A decoder takes a batch of prompt token ids and a number of new tokens, and returns the tokens it
generated with two times read from the clock it is given: the first token (prefill and the first
greedy pick) and the whole run. Greedy, no sampling, and no stop at an end-of-sequence token, so
every run of every model decodes exactly as many tokens and the rows compare like with like.

DECODERS maps a runtime name to a factory `(model, device, threads) -> Decoder` that raises
compress.errors.Unavailable with the reason when it cannot decode that model there. torch (its KV
cache, `compress.kernels` for quantized layers) and openvino (a stateful IR) are built in; another
runtime plugs in by adding its factory. A runtime without one is reported as
unavailable, with the reason, never left out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from compress.errors import Unavailable
from compress.model import Model

Clock = Callable[[], float]


@dataclass
class Generated:
    """What one greedy run produced: tokens [batch, new_tokens] (CPU int64) and its times."""

    tokens: Any
    ttft_s: float  # from the call to the first new token of every sequence (prefill + first pick)
    total_s: float  # the whole run: first token and the remaining new_tokens - 1 decode steps


@dataclass
class Decoder:
    """One model ready to decode: `generate(input_ids [B, P] CPU int64, new_tokens, clock)`."""

    generate: Callable[[Any, int, Clock], Generated]
    info: dict = field(default_factory=dict)
    close: Callable[[], None] = lambda: None


def torch_decoder(model: Model, device: str, threads: int) -> Decoder:
    """Greedy decoding with the model's own KV cache; the prompt's logits are computed for its last
    position only where the architecture allows it (`logits_to_keep`), as transformers' generate does.
    `threads` is the caller's to set (torch's intra-op threads are process-wide)."""
    import inspect

    import torch

    if model.onnx_only:
        raise Unavailable("exists only as an ONNX graph (made by a backend): no torch module to decode with")
    if model.family != "causal-lm":
        raise Unavailable(f"a {model.family} model does not generate text")
    module = model.module.to(device)
    parameters = inspect.signature(module.forward).parameters
    cache_name = "cache" if "cache" in parameters else "past_key_values"  # transformers >= 5.2: cache
    keep = {"logits_to_keep": 1} if "logits_to_keep" in parameters else {}
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)

    def step(ids, cache):
        extra = {cache_name: cache} if cache is not None else {}
        out = module(input_ids=ids, use_cache=True, **keep, **extra)
        cache = out.get("cache") if "cache" in out else out.get("past_key_values")
        return out.logits[:, -1].argmax(-1, keepdim=True), cache

    def generate(input_ids, new_tokens: int, clock: Clock) -> Generated:
        ids = input_ids.to(device)
        with torch.inference_mode():
            sync()
            start = clock()
            token, cache = step(ids, None)
            sync()
            first = clock()
            tokens = [token]
            for _ in range(new_tokens - 1):
                token, cache = step(token, cache)
                tokens.append(token)
            sync()
            end = clock()
        return Generated(torch.cat(tokens, dim=1).cpu(), first - start, end - start)

    return Decoder(generate, close=lambda: model.module.to("cpu"))


def openvino_decoder(model: Model, device: str, threads: int) -> Decoder:
    """Greedy decoding with a stateful OpenVINO IR (KV cache held as state, logits of the last
    position only, as openvino-genai decodes): the folder's exported IR (`--export openvino`), else
    one converted from the torch module for this run. Weight-only quantization only (the stateful
    IR holds no quantized activations)."""
    import torch

    from compress.openvino.core import check_device
    from compress.openvino.generate import OvDecoder
    from compress.openvino.ir import IR_DIR, IR_NAME, quantization
    from compress.openvino.llm import convert_causal_lm, llm_refusal

    if model.onnx_only:
        raise Unavailable("exists only as an ONNX graph (made by a backend): no stateful IR to decode with")
    if model.family != "causal-lm":
        raise Unavailable(f"a {model.family} model does not generate text")
    check_device(device)
    reason = llm_refusal(quantization(model.module)[1])
    if reason:
        raise Unavailable(reason)
    exported = model.folder / IR_DIR / IR_NAME if model.folder is not None else None
    if exported is not None and exported.is_file():
        source, origin = exported, "the folder's exported IR"
    else:
        source, origin = convert_causal_lm(model.module, model.config)[0], "converted for this run"
    decoder = OvDecoder(source, threads=threads)

    def generate(input_ids, new_tokens: int, clock: Clock) -> Generated:
        start = clock()
        result = decoder.generate(input_ids, new_tokens, clock=clock)
        end = clock()
        return Generated(torch.from_numpy(result.tokens), result.first_token_s, end - start)

    return Decoder(generate, info={"ir": origin})


DecoderFactory = Callable[[Model, str, int], Decoder]
DECODERS: dict[str, DecoderFactory] = {"torch": torch_decoder, "openvino": openvino_decoder}
# Runtimes the evaluator times one forward pass on but cannot decode with yet, and why.
NO_DECODER = {
    "onnxruntime": "no decoder: the evaluator's ONNX export has no KV cache, so each token would rerun "
    "the whole sequence (not what a serving runtime does)",
}


def missing_decoder(runtime: str) -> str | None:
    """Why `runtime` cannot decode at all (no decoder registered), or None when it has one."""
    if runtime in DECODERS:
        return None
    return NO_DECODER.get(runtime, f"no decoder for runtime '{runtime}' in this compress yet")


def decoder_for(runtime: str, model: Model, device: str, threads: int) -> Decoder:
    """The runtime's decoder for `model` on `device`; Unavailable with the reason otherwise."""
    why = missing_decoder(runtime)
    if why:
        raise Unavailable(why)
    return DECODERS[runtime](model, device, threads)
