"""How a model with 16-bit layers runs: in 16 bits, with float32 islands.

A checkpoint made by `--scheme bf16` (or fp16) loads as a 16-bit model: its Linear, Embedding and
Conv layers hold their weights in the stored dtype and compute in it (compress.qmodules.
Float16Linear and siblings), and the activations between them flow in that dtype, so the matrix
products run on the 16-bit units (AMX-BF16 / AVX-512 BF16 on CPU, tensor cores on CUDA). A module
that holds float32 parameters of its own (a LayerNorm or RMSNorm, a layer the pass left out) runs in
float32 as an island: its floating inputs are widened to its parameters' dtype and its floating
outputs rounded back to the model's 16-bit dtype. On MiniLM (batch 8 x 128, benchmarks/results/
bf16.md) the islands cost no measurable time against a model cast to bf16 whole and keep the
worst embedding cosine closer to float (0.99991 against 0.99989), so norms stay float32 on disk and
in memory, and a model in memory holds exactly what its checkpoint holds.

The same function sets the islands up whether the model was loaded (compress.model) or made in
memory (the quantize pass), so both run the same arithmetic. `openvino_precision_hint` says which
inference precision OpenVINO should use for a compress checkpoint; OpenVINO is given `float32_twin`'s
graph (the 16-bit weights widened exactly) and rounds to that precision itself.
"""

from __future__ import annotations

from typing import Any

from compress.errors import BadInput

_ISLAND = "_compress_island"  # (own dtype, model dtype) on a module that runs as a float island


def compute_dtype(module) -> Any:
    """The 16-bit dtype the model's 16-bit layers compute in, or None when it has none."""
    from compress.qmodules import _Float16Weight

    dtypes = {m.weight.dtype for m in module.modules() if isinstance(m, _Float16Weight)}
    if len(dtypes) > 1:
        shown = " and ".join(sorted(str(d).removeprefix("torch.") for d in dtypes))
        raise BadInput(f"the model mixes {shown} layers; a model computes in one 16-bit dtype.")
    return dtypes.pop() if dtypes else None


def float_islands(module) -> list[str]:
    """Make every module holding float32 parameters of its own run as a float island in a model
    with 16-bit layers; the names of the islands ([] for a model without 16-bit layers)."""
    import torch

    from compress.qmodules import _Float16Weight

    dtype = compute_dtype(module)
    if dtype is None:
        return []
    names = []
    for name, sub in module.named_modules():
        if isinstance(sub, _Float16Weight):
            continue
        own = [
            p.dtype
            for p in sub.parameters(recurse=False)
            if p.is_floating_point() and p.dtype not in (torch.bfloat16, torch.float16)
        ]
        if not own:
            continue
        if getattr(sub, _ISLAND, None) is None:
            sub.register_forward_pre_hook(_widen, with_kwargs=True)
            sub.register_forward_hook(_narrow)
        setattr(sub, _ISLAND, (own[0], dtype))
        names.append(name)
    return names


def _widen(module, args, kwargs):
    own = getattr(module, _ISLAND)[0]
    return _cast(args, own), _cast(kwargs, own)


def _narrow(module, args, output):
    return _cast(output, getattr(module, _ISLAND)[1])


def _cast(value: Any, dtype: Any) -> Any:
    """`value` with its floating tensors (also inside plain tuples, lists and dicts) in `dtype`."""
    import torch

    if isinstance(value, torch.Tensor):
        return value.to(dtype) if value.is_floating_point() else value
    if type(value) in (tuple, list):
        return type(value)(_cast(v, dtype) for v in value)
    if type(value) is dict:
        return {k: _cast(v, dtype) for k, v in value.items()}
    return value


def float32_twin(module) -> Any:
    """A copy of `module` that computes in float32 on its 16-bit weights widened exactly (its float
    islands made no-ops): the graph OpenVINO is given, to run with a 16-bit inference precision."""
    import copy

    import torch

    from compress.qmodules import _Float16Weight

    twin = copy.deepcopy(module)
    for sub in twin.modules():
        if isinstance(sub, _Float16Weight):
            sub.weight = sub.weight.to(torch.float32)
        elif getattr(sub, _ISLAND, None) is not None:
            setattr(sub, _ISLAND, (torch.float32, torch.float32))
    return twin


def scheme_of_module(module) -> str | None:
    """'bf16' or 'fp16' for a model with 16-bit layers, else None."""
    import torch

    dtype = compute_dtype(module)
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype) if dtype is not None else None


def stored_precision(info: Any) -> str | None:
    """The 16-bit scheme ('bf16' or 'fp16') of a checkpoint's header (compress.formats.
    CompressionInfo), or None when none of its weights is stored in 16 bits."""
    schemes = {(meta.get("inner") or meta).get("scheme") for meta in (info.tensors if info else {}).values()}
    found = sorted(s for s in schemes if s in ("bf16", "fp16"))
    return found[0] if found else None


def openvino_precision_hint(info: Any, cpu_features: frozenset[str] | None = None) -> tuple[str, str]:
    """(INFERENCE_PRECISION_HINT for OpenVINO's CPU plugin, why) for a compress checkpoint's header.

    A bf16 checkpoint runs in bf16 where the CPU has BF16 instructions (AMX-BF16, AVX-512 BF16), an
    fp16 one in f16 where it has FP16 ones (AVX-512 FP16, AMX-FP16); anything else in f32. f32 is
    also the answer for a float or integer checkpoint: OpenVINO's own default on a BF16 CPU is bf16,
    which would round a float baseline behind the measurement's back. `cpu_features`: the CPU's
    flags (compress.hardware.detect().cpu.features); None: this machine's.
    """
    return precision_hint(stored_precision(info), cpu_features)


def precision_hint(
    scheme: str | None, cpu_features: frozenset[str] | None = None, static_int8: bool = False
) -> tuple[str, str]:
    """openvino_precision_hint for a 16-bit scheme ('bf16', 'fp16') or None (float or integer).
    `static_int8`: the graph quantizes activations (u8 x i8 matmuls): its float parts (attention
    products, softmax, norms) run in bf16 where the CPU has BF16, as OpenVINO does by default there:
    MiniLM static INT8, batch 8 x 128 on an AMX CPU: 26.1 ms against 31.9 ms with f32 float parts
    (NNCF's static INT8, whose attention products are INT8: 26.8 / 28.7 ms), benchmarks/results/speed.md."""
    if cpu_features is None:
        from compress.hardware import detect

        cpu_features = detect().cpu.features
    needs = {"bf16": ("amx_bf16", "avx512_bf16"), "fp16": ("amx_fp16", "avx512_fp16")}
    if scheme is None and static_int8:
        found = [f for f in needs["bf16"] if f in cpu_features]
        if found:
            return "bf16", (
                f"a static INT8 graph on a CPU with {found[0].upper().replace('_', '-')}: its float parts "
                "(attention products, softmax, norms) in bf16, OpenVINO's default there"
            )
        return "f32", "a static INT8 graph on a CPU without BF16: its float parts run in f32"
    if scheme is None:
        return "f32", "a float or integer checkpoint: its float parts run as stored (f32)"
    hint = {"bf16": "bf16", "fp16": "f16"}[scheme]
    found = [f for f in needs[scheme] if f in cpu_features]
    if found:
        return hint, f"a {scheme} checkpoint on a CPU with {found[0].upper().replace('_', '-')}"
    return "f32", (
        f"a {scheme} checkpoint, but this CPU has none of {', '.join(needs[scheme])}: OpenVINO would "
        f"emulate {hint}, so its weights run widened to f32"
    )
