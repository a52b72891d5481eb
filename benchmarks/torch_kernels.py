"""Torch integer kernels against dequantize-then-F.linear, per layer shape. One run, one machine.

    python benchmarks/torch_kernels.py [--threads 1]   # writes benchmarks/results/torch_kernels.{md,json}

Shapes are the Linear layers of all-MiniLM-L6-v2 (384 wide, FFN 1536) and of Gemma-3-270M (640
wide, 4 query heads x 256, 1 key/value head, FFN 2048; its float weights are dequantized Q4_K_M)
at 8 x 128 tokens, and Gemma's and MiniLM's at 1 to 256 tokens (decoding, short prompts). Weights
are random, quantized by compress's RTN (INT8 per channel; INT4 group 32 asymmetric): the kernels'
speed does not depend on the values.

Each pair is timed interleaved (baseline, candidate, baseline, ...) and reported as the ratio of
medians; the max difference is relative to the largest output of the dequantize path.
CPU: torch._weight_int8pack_mm and torch._weight_int4pack_mm_for_cpu with bfloat16 activations and
scales (what compress runs; their float32 path is a scalar loop, shown at a few shapes as
"float32 activations"), and torch._int_mm. CUDA (when a GPU is present): the kernels
compress.kernels dispatches to, through QuantLinear itself. End-to-end decoding: benchmarks/decode.py.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from common import benchmark_lock, markdown_table, write_results

from compress import kernels
from compress.passes.quantize.rtn import quantize_int4, quantize_int8
from compress.qmodules import QuantLinear, per_token_fake_quant

TOKENS = 8 * 128
SHAPES = [  # model, layer, rows (tokens), in, out
    ("MiniLM", "attention q/k/v/out", TOKENS, 384, 384),
    ("MiniLM", "FFN up", TOKENS, 384, 1536),
    ("MiniLM", "FFN down", TOKENS, 1536, 384),
    ("Gemma-3-270M", "q_proj", TOKENS, 640, 1024),
    ("Gemma-3-270M", "k/v_proj", TOKENS, 640, 256),
    ("Gemma-3-270M", "o_proj", TOKENS, 1024, 640),
    ("Gemma-3-270M", "gate/up_proj", TOKENS, 640, 2048),
    ("Gemma-3-270M", "down_proj", TOKENS, 2048, 640),
    # Where the CPU weight-only kernels stop winning (kernels.CPU_MAX_ROWS comes from these rows).
    *[("Gemma-3-270M", "gate/up_proj", m, 640, 2048) for m in (1, 4, 16, 32, 64, 128, 256)],
    *[("Gemma-3-270M", "down_proj", m, 2048, 640) for m in (1, 16, 64, 128, 256)],
    ("Gemma-3-270M", "k/v_proj", 1, 640, 256),
    ("Gemma-3-270M", "tied output head", 1, 640, 262_144),
    *[("MiniLM", "FFN up", m, 384, 1536) for m in (1, 16, 64, 128)],
]
FLOAT32_ROWS = 4  # at most this many rows: also time the kernels' float32 path (slow: a scalar loop)
GROUP = 32
MIN_ROUNDS, BUDGET_S = 3, 2.0


def timed(fn, sync) -> float:
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return (time.perf_counter() - start) * 1e3


def interleaved(baseline, candidate, sync=lambda: None) -> dict:
    baseline(), candidate()  # warm up (packing caches, allocator)
    base_ms, cand_ms = [], []
    start = time.perf_counter()
    while len(base_ms) < MIN_ROUNDS or time.perf_counter() - start < BUDGET_S:
        base_ms.append(timed(baseline, sync))
        cand_ms.append(timed(candidate, sync))
        if len(base_ms) >= 200:
            break
    b, c = statistics.median(base_ms), statistics.median(cand_ms)
    return {"dequantize_ms": b, "kernel_ms": c, "speedup": b / c, "rounds": len(base_ms)}


def rel_diff(reference: torch.Tensor, other: torch.Tensor) -> float:
    return ((reference - other.float()).abs().max() / reference.abs().max()).item()


def cpu_cases(m: int, k: int, n: int) -> list[dict]:
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(n, k, generator=gen) / k**0.5
    x = torch.randn(m, k, generator=gen)
    bias = torch.randn(n, generator=gen) * 0.01
    q8, q4 = quantize_int8(w), quantize_int4(w, GROUP, symmetric=False)
    bf16 = torch.bfloat16
    packed4, sz4 = kernels.cpu_int4_pack(q4, bf16)
    scale8 = q8.scale.to(bf16)
    cases = [  # label, kernel, qt, baseline, candidate, activations
        (
            "int8 weight-only",
            kernels.INT8_WEIGHT_ONLY,
            q8,
            lambda: F.linear(x, q8.dequantize(torch.float32), bias),
            lambda: torch._weight_int8pack_mm(x.to(bf16), q8.data, scale8).float() + bias,
            "none",
        ),
        (
            "int4 weight-only (g32)",
            kernels.INT4_TINYGEMM_CPU,
            q4,
            lambda: F.linear(x, q4.dequantize(torch.float32), bias),
            lambda: torch._weight_int4pack_mm_for_cpu(x.to(bf16), packed4, GROUP, sz4).float() + bias,
            "none",
        ),
    ]
    if m <= FLOAT32_ROWS:
        packed32, sz32 = kernels.cpu_int4_pack(q4)
        cases += [
            (
                "int8 weight-only, float32 activations",
                kernels.INT8_WEIGHT_ONLY,
                q8,
                lambda: F.linear(x, q8.dequantize(torch.float32), bias),
                lambda: torch._weight_int8pack_mm(x, q8.data, q8.scale) + bias,
                "none",
            ),
            (
                "int4 weight-only (g32), float32 activations",
                kernels.INT4_TINYGEMM_CPU,
                q4,
                lambda: F.linear(x, q4.dequantize(torch.float32), bias),
                lambda: torch._weight_int4pack_mm_for_cpu(x, packed32, GROUP, sz32) + bias,
                "none",
            ),
        ]
    if m > 16 and n <= 4096:  # the dynamic path only matters for batches; _int_mm is very slow on CPU
        cases.append(
            (
                "int8 dynamic activations",
                kernels.INT8_DYNAMIC,
                q8,
                lambda: F.linear(per_token_fake_quant(x), q8.dequantize(torch.float32), bias),
                lambda: kernels.int8_dynamic_matmul(x, q8.data.t(), q8.scale, bias),
                "dynamic",
            )
        )
    rows = []
    for scheme, name, qt, baseline, candidate, activations in cases:
        layer = QuantLinear(qt, bias)
        layer.activations = activations
        with torch.inference_mode():
            layer(x)  # what compress's QuantLinear picks for this input on CPU
            diff = rel_diff(baseline(), candidate())
            rows.append(
                {"scheme": scheme, "kernel": name, "compress_runs": layer.kernel.name, "max_rel_diff": diff}
                | interleaved(baseline, candidate)
            )
    return rows


def cuda_cases(m: int, k: int, n: int) -> list[dict]:
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(n, k, generator=gen) / k**0.5
    x = torch.randn(m, k, generator=gen).cuda()
    bias = (torch.randn(n, generator=gen) * 0.01).cuda()
    rows = []
    for scheme, qt, activations, dtype in (
        ("int8 weight-only", quantize_int8(w), "none", torch.bfloat16),
        ("int8 dynamic activations", quantize_int8(w), "dynamic", torch.float32),
        ("int4 weight-only (g32)", quantize_int4(w, GROUP, symmetric=False), "none", torch.bfloat16),
    ):
        module = QuantLinear(qt, bias.cpu()).cuda()
        module.activations = activations
        xi = x.to(dtype)
        with torch.inference_mode():

            def baseline(xi=xi, module=module):
                return module.dequantized_forward(xi)

            def candidate(xi=xi, module=module):
                return module(xi)

            diff = rel_diff(baseline().float(), candidate())
            kernel = module.kernel  # what QuantLinear ran: an unavailable kernel shows as dequantize
            timing = interleaved(baseline, candidate, torch.cuda.synchronize)
        rows.append(
            {"scheme": scheme, "kernel": kernel.name, "reason": kernel.reason, "max_rel_diff": diff, **timing}
        )
    return rows


def table(rows: list[dict]) -> str:
    headers = [
        "model",
        "layer",
        "tokens x in -> out",
        "scheme",
        "kernel",
        "dequantize ms",
        "kernel ms",
        "speedup",
        "max rel diff",
        "compress runs",
    ]
    body = [
        [
            r["model"],
            r["layer"],
            f"{r['rows']} x {r['in']} -> {r['out']}",
            r["scheme"],
            r["kernel"],
            r["dequantize_ms"],
            r["kernel_ms"],
            f"{r['speedup']:.2f}x",
            f"{r['max_rel_diff']:.1e}",
            r["compress_runs"],
        ]
        for r in rows
    ]
    return markdown_table(headers, body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cpu_rows, cuda_rows = [], []
    with benchmark_lock():
        load = os.getloadavg()[0]
        for model, layer, m, k, n in SHAPES:
            shape = {"model": model, "layer": layer, "rows": m, "in": k, "out": n}
            cpu_rows += [{**shape, **row} for row in cpu_cases(m, k, n)]
            if torch.cuda.is_available():
                cuda_rows += [{**shape, **row} for row in cuda_cases(m, k, n)]
            print(f"measured {model} {layer} x{m}", flush=True)
        load = (load, os.getloadavg()[0])
    cuda_note = (
        f"measured on {torch.cuda.get_device_name()}"
        if torch.cuda.is_available()
        else "not measured: no GPU on this machine (torch.cuda.is_available() is False)"
    )
    md = [
        "# Torch integer kernels vs dequantize-then-F.linear\n",
        f"torch {torch.__version__}, {cpu_name()}, {args.threads} thread(s); load average "
        f"{load[0]:.1f} at the start, {load[1]:.1f} at the end: the machine's 2 cores were shared with "
        "up to 8 other jobs (timings interleaved, ratios of medians; indicative). One thread: with two "
        "OpenMP threads on these busy cores, every small operation waited 5-30 ms for the second thread. "
        f"Random weights at each layer's shape, compress RTN quantization (INT8 per channel, INT4 group "
        f"{GROUP} asymmetric). The CPU kernels get bfloat16 activations and scales (what compress runs) "
        "unless a row says float32. Gemma-3-270M shapes come from its config (its float weights are "
        "dequantized Q4_K_M). Decoding the real model: [decode.md](decode.md).\n",
        "## CPU\n",
        table(cpu_rows),
        "\n## CUDA\n",
        table(cuda_rows) if cuda_rows else f"{cuda_note}.\n",
    ]
    write_results(
        "torch_kernels",
        "\n".join(md),
        {"cpu": cpu_rows, "cuda": cuda_rows, "cuda_note": cuda_note, "load": load},
    )


def cpu_name() -> str:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    names = [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")]
    return names[0] if names else platform.processor() or platform.machine()


if __name__ == "__main__":
    main()
