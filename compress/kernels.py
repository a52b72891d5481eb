"""Which torch kernel runs a QuantLinear, and the integer kernels themselves.

On CUDA a quantized Linear runs on torch's integer kernels rather than dequantize-then-matmul:

- INT8 weights, dynamic activations: per-token int8 codes of x (the rounding of
  qmodules.per_token_fake_quant, so torch and the ONNX export agree), torch._int_mm -> int32, times
  the row scales of x and the column scales of W, plus bias.
- INT8 weight-only: torch._weight_int8pack_mm.
- INT4 weight-only: torch's tinygemm kernel (torch._weight_int4pack_mm, bfloat16 activations). It
  computes w = (q - 8) * scale + zero with a float zero; compress stores w = (q - zp) * scale, so
  zero = (8 - zp) * scale. The packed weight is built once per device and cached on the module
  (a plain attribute, never in the state_dict).

On CPU torch's weight-only kernels (torch._weight_int8pack_mm, torch._weight_int4pack_mm_for_cpu)
are vectorised (AVX-512 and AVX2) for bfloat16 activations only: with float32 they run a scalar loop,
5-80x slower than F.linear on the float weight (the cause of issue 16's "INT4 decodes 2.4x slower
than float32"). So CPU feeds them bfloat16 activations and scales, and returns the input's dtype;
results equal the dequantize path's within bfloat16 rounding (~0.4% of the largest output). Measured
against dequantize-then-F.linear on MiniLM's and Gemma-3-270M's shapes
(benchmarks/results/torch_kernels.md), they win up to CPU_MAX_ROWS rows (decoding, short prompts)
and lose for larger batches, which dequantize; torch._int_mm loses everywhere.

Every choice is visible: `module.kernel` (a Kernel: name and reason) after a forward,
`kernels_ran(model)` for the last call and `kernels(model)` for each layer's plan. A kernel that is
unavailable (shape, group size, torch build, device) is named in the reason, never silently replaced.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

DEQUANTIZE = "dequantize+F.linear"
INT8_DYNAMIC = "torch._int_mm (int8 x int8)"
INT8_WEIGHT_ONLY = "torch._weight_int8pack_mm"
INT4_TINYGEMM = "torch._weight_int4pack_mm (tinygemm)"
INT4_TINYGEMM_CPU = "torch._weight_int4pack_mm_for_cpu"
INT4_GROUPS = (32, 64, 128, 256)
INNER_K_TILES = 8  # tinygemm's widest tile; K must be a multiple of INNER_K_TILES * 16
# CPU: torch's weight-only integer kernels (bfloat16 activations) win up to this many rows (tokens)
# per call; torch._int_mm loses everywhere. Measured in benchmarks/torch_kernels.py.
CPU_MAX_ROWS = {"int8": 64, "int4": 128}
# The CPU int8 kernel reads the input 16 values at a time with aligned loads.
CPU_INT8_K_MULTIPLE = 16
CPU_DYNAMIC_WHY = "torch._int_mm measured 2-25x slower than fake-quant then F.linear on CPU"
# True inside `stored_arithmetic()`: every QuantLinear dequantizes (what exports are checked against).
_STORED_ARITHMETIC = contextvars.ContextVar("compress_stored_arithmetic", default=False)


@contextlib.contextmanager
def stored_arithmetic() -> Iterator[None]:
    """Within: quantized Linear layers compute dequantize-then-F.linear in the input's dtype, the
    arithmetic the stored codes define, not an integer kernel's bfloat16 rounding. Exports (ONNX,
    OpenVINO) are checked against this."""
    token = _STORED_ARITHMETIC.set(True)
    try:
        yield
    finally:
        _STORED_ARITHMETIC.reset(token)


@dataclass(frozen=True)
class Kernel:
    """The kernel a layer runs on one device, and why."""

    name: str
    reason: str

    @property
    def integer(self) -> bool:
        return self.name != DEQUANTIZE


# --- the integer math, callable on any device (tests run it on CPU) ------------------------------


def per_token_codes(x2d: Any) -> tuple[Any, Any]:
    """int8 codes and float scales [M, 1] of each row of x, rounded exactly as per_token_fake_quant."""
    import torch

    scale = x2d.abs().amax(dim=-1, keepdim=True).clamp(min=1e-30) * torch.tensor(1 / 127, dtype=x2d.dtype)
    codes = torch.round(x2d / scale).clamp(-128, 127).to(torch.int8)
    return codes, scale


def int8_dynamic_matmul(x2d: Any, weight_t: Any, weight_scale: Any, bias: Any) -> Any:
    """x [M, K] float, weight_t [K, N] int8 (a transposed view), weight_scale [N] -> [M, N] in x's dtype."""
    import torch

    codes, scale = per_token_codes(x2d)
    acc = torch._int_mm(codes, weight_t)
    out = acc.to(torch.float32) * (scale.to(torch.float32) * weight_scale.to(torch.float32)[None, :])
    if bias is not None:
        out = out + bias.to(torch.float32)
    return out.to(x2d.dtype)


def tinygemm_scales_and_zeros(qt: Any, dtype: Any) -> Any:
    """[groups, N, 2] scales and float zeros for tinygemm from compress's codes convention.

    compress: w = (q - zp) * s.  tinygemm: w = (q - 8) * s + z.  So z = (8 - zp) * s.
    """
    import torch

    scale = qt.scale.to(torch.float32)
    zero = (8 - qt.zero_points().to(scale.device, torch.float32)) * scale
    return torch.stack([scale, zero], dim=-1).transpose(0, 1).contiguous().to(dtype)


def tinygemm_uint8_codes(qt: Any) -> Any:
    """compress's packed bytes (even column in the low nibble) -> tinygemm's (even in the high)."""
    return ((qt.data & 0x0F) << 4) | (qt.data >> 4)


def tinygemm_dequantize(codes: Any, scales_and_zeros: Any, group_size: int) -> Any:
    """The reference formula of tinygemm's weight, w = (q - 8) * s + z, as float32 [N, K]."""
    import torch

    n, k = codes.shape
    s = scales_and_zeros[..., 0].to(torch.float32).t()[:, :, None]
    z = scales_and_zeros[..., 1].to(torch.float32).t()[:, :, None]
    grouped = codes.to(torch.float32).reshape(n, k // group_size, group_size)
    return ((grouped - 8) * s + z).reshape(n, k)


# --- choosing and caching a kernel per module ----------------------------------------------------


@dataclass
class _Plan:
    kernel: Kernel
    tensors: dict[str, Any]
    min_rows: int = 1  # inputs with fewer or more rows (tokens) than this range dequantize instead
    max_rows: int | None = None
    outside: str = ""  # why they do
    compute_dtype: Any = None  # the activations' dtype inside the kernel (None: the input's)


def _dequantize(reason: str) -> _Plan:
    return _Plan(Kernel(DEQUANTIZE, reason), {})


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def _int4_unsupported(qt: Any, k: int, n: int, cpu: bool) -> str | None:
    if qt.group_size not in INT4_GROUPS:
        return f"group size {qt.group_size} (it takes {', '.join(map(str, INT4_GROUPS))})"
    if cpu and n % 16:
        return f"out_features {n} is not a multiple of 16"
    if not cpu and (k % (INNER_K_TILES * 16) or n % 8):
        return f"shape {n}x{k}: it needs in_features % {INNER_K_TILES * 16} == 0 and out_features % 8 == 0"
    return None


def _plan_cuda(module: Any, dtype: Any) -> _Plan:
    import torch

    qt = module.qweight
    n, k = qt.shape
    if module.activations not in ("none", "dynamic"):
        return _dequantize(f"activations '{module.activations}' have no integer kernel here")
    if qt.scheme == "int8" and module.activations == "dynamic":
        if k % 8 or n % 8:
            return _dequantize(f"torch._int_mm needs in/out features multiple of 8, not {k}/{n}")
        tensors = {"weight_t": module.weight.t(), "scale": module.weight_scale.to(torch.float32)}
        kernel = Kernel(INT8_DYNAMIC, "int8 weights, per-token int8 activations")
        return _Plan(kernel, tensors, min_rows=17, outside="torch._int_mm needs more than 16 rows on CUDA")
    if module.activations == "dynamic":
        return _dequantize("int4 weights with dynamic int8 activations have no torch kernel")
    if qt.scheme == "int8":
        plan = _Plan(
            Kernel(INT8_WEIGHT_ONLY, "int8 weight-only"),
            {"weight": module.weight, "scale": module.weight_scale.to(dtype)},
        )
        return _probe(plan, module, dtype)
    problem = _int4_unsupported(qt, k, n, cpu=False)
    if problem:
        return _dequantize(f"tinygemm unavailable: {problem}")
    try:
        packed = torch._convert_weight_to_int4pack(tinygemm_uint8_codes(qt).contiguous(), INNER_K_TILES)
    except (RuntimeError, NotImplementedError, AttributeError) as exc:
        return _dequantize(f"tinygemm unavailable: {_first_line(exc)}")
    tensors = {"packed": packed, "scales_and_zeros": tinygemm_scales_and_zeros(qt, torch.bfloat16)}
    plan = _Plan(Kernel(INT4_TINYGEMM, "int4 weight-only, bfloat16 activations and scales"), tensors)
    return _probe(plan, module, dtype)


def _plan_cpu(module: Any, dtype: Any) -> _Plan:
    """Weight-only integer kernels with bfloat16 activations for up to CPU_MAX_ROWS rows;
    dequantize-then-matmul otherwise (the measured faster choice on each side of CPU_MAX_ROWS,
    benchmarks/results/torch_kernels.md)."""
    import torch

    qt = module.qweight
    n, k = qt.shape
    if module.activations != "none":
        return _dequantize(f"CPU, activations '{module.activations}': {CPU_DYNAMIC_WHY}")
    if dtype not in (torch.float32, torch.bfloat16):
        return _dequantize(
            f"CPU, {dtype} inputs: the CPU integer kernels are vectorised for bfloat16 (float32 inputs "
            "are converted to it); float16 would lose range"
        )
    most = CPU_MAX_ROWS[qt.scheme]
    big = f"CPU, more than {most} rows: dequantize-then-matmul measured faster than the integer kernel"
    why = f"CPU weight-only, bfloat16 activations, at most {most} rows: measured faster than dequantizing"
    bf16 = torch.bfloat16
    if qt.scheme == "int8":
        if k % CPU_INT8_K_MULTIPLE:
            return _dequantize(f"CPU int8 kernel unavailable: in_features {k} is not a multiple of 16")
        tensors = {"weight": _aligned(module.weight, 16), "scale": module.weight_scale.to(bf16)}
        return _Plan(Kernel(INT8_WEIGHT_ONLY, why), tensors, max_rows=most, outside=big, compute_dtype=bf16)
    problem = _int4_unsupported(qt, k, n, cpu=True)
    if problem:
        return _dequantize(f"CPU int4 kernel unavailable: {problem}")
    packed, scales_and_zeros = cpu_int4_pack(qt, bf16)
    tensors = {"packed": packed, "scales_and_zeros": scales_and_zeros}
    return _Plan(Kernel(INT4_TINYGEMM_CPU, why), tensors, max_rows=most, outside=big, compute_dtype=bf16)


def _aligned(t: Any, alignment: int = 64) -> Any:
    """`t` itself when its data starts on an `alignment`-byte boundary, else an aligned copy (torch's
    CPU kernels use aligned vector loads; a fresh tensor is 64-byte aligned)."""
    return t if t.data_ptr() % alignment == 0 else t.clone()


def _probe(plan: _Plan, module: Any, dtype: Any) -> _Plan:
    """Run the kernel once on a small input: a torch build without it for this device is reported."""
    import torch

    sample = torch.zeros(max(plan.min_rows, 32), module.in_features, dtype=dtype, device=module.weight.device)
    try:
        _run(plan, module, sample)
    except (RuntimeError, NotImplementedError, AttributeError) as exc:
        return _dequantize(f"{plan.kernel.name} unavailable on {module.weight.device}: {_first_line(exc)}")
    return plan


def plan_for(module: Any, device: Any, dtype: Any) -> _Plan:
    """The kernel plan for `module` on `device` with inputs of `dtype`, built once and cached."""
    import torch

    pointer = module.weight.data_ptr()
    key = (str(device), dtype, module.activations, pointer)
    cache = module.__dict__.setdefault("_kernel_plans", {})
    if key not in cache:
        for stale in [k for k in cache if k[3] != pointer]:  # the weight moved: free its old copies
            del cache[stale]
        cache[key] = (
            _plan_cuda(module, dtype) if torch.device(device).type == "cuda" else _plan_cpu(module, dtype)
        )
    return cache[key]


def _run(plan: _Plan, module: Any, x: Any) -> Any:
    import torch

    name, t = plan.kernel.name, plan.tensors
    x = module.smoothed_input(x)
    x2d = x.reshape(-1, module.in_features)
    if plan.compute_dtype is not None and x2d.dtype != plan.compute_dtype:
        x2d = x2d.to(plan.compute_dtype)
    x2d = _aligned(x2d.contiguous())  # the kernels refuse strided inputs and load aligned vectors
    if name == INT8_DYNAMIC:
        out = int8_dynamic_matmul(x2d, t["weight_t"], t["scale"], module.bias)
    else:
        if name == INT8_WEIGHT_ONLY:
            out = torch._weight_int8pack_mm(x2d, t["weight"], t["scale"])
        elif name == INT4_TINYGEMM:
            packed, sz = t["packed"], t["scales_and_zeros"]
            out = torch._weight_int4pack_mm(x2d.to(torch.bfloat16), packed, module.group_size, sz)
        else:  # INT4_TINYGEMM_CPU
            out = torch._weight_int4pack_mm_for_cpu(
                x2d, t["packed"], module.group_size, t["scales_and_zeros"]
            )
        out = out.to(x.dtype)
        if module.bias is not None:
            out = out + module.bias.to(x.dtype)
    return out.reshape(*x.shape[:-1], out.shape[-1])


def quant_linear_forward(module: Any, x: Any) -> Any:
    """QuantLinear.forward: the chosen kernel, or dequantize-then-matmul while exporting (a traced
    graph holds plain operators only). Sets `module.kernel` to the kernel that ran."""
    import torch

    if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        module.kernel = Kernel(DEQUANTIZE, "tracing for export: the graph holds plain operators")
        return module.dequantized_forward(x)
    if _STORED_ARITHMETIC.get():
        why = "checking an export: the stored arithmetic, not a kernel's rounding"
        module.kernel = Kernel(DEQUANTIZE, why)
        return module.dequantized_forward(x)
    if x.requires_grad and torch.is_grad_enabled():
        module.kernel = Kernel(
            DEQUANTIZE, "gradients flow through the input: integer kernels have no backward"
        )
        return module.dequantized_forward(x)
    plan = plan_for(module, x.device, x.dtype)
    rows = x.numel() // module.in_features
    inside = plan.min_rows <= rows and (plan.max_rows is None or rows <= plan.max_rows)
    if plan.kernel.name == DEQUANTIZE or not inside:
        module.kernel = plan.kernel if plan.kernel.name == DEQUANTIZE else Kernel(DEQUANTIZE, plan.outside)
        return module.dequantized_forward(x)
    module.kernel = plan.kernel
    return _run(plan, module, x)


def cpu_int4_pack(qt: Any, dtype: Any = None) -> tuple[Any, Any]:
    """The packed weight and scales_and_zeros (in `dtype`, float32 by default; the activations'
    dtype) of torch's CPU int4 kernel (torch._weight_int4pack_mm_for_cpu takes int32 codes [N, K])."""
    import torch

    codes = qt.codes().to(torch.int32).contiguous()
    packed = torch._convert_weight_to_int4pack_for_cpu(codes, INNER_K_TILES)
    return packed, tinygemm_scales_and_zeros(qt, dtype or torch.float32)
