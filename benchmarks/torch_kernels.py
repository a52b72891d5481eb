"""Torch integer kernels against dequantize-then-F.linear, per layer shape. One run, one machine.

    python benchmarks/torch_kernels.py      # writes benchmarks/results/torch_kernels.{md,json}

Shapes are the Linear layers of all-MiniLM-L6-v2 (384 wide, FFN 1536) and of Gemma-3-270M (640
wide, 4 query heads x 256, 1 key/value head, FFN 2048; its float weights are dequantized Q4_K_M)
at 8 x 128 tokens, and Gemma's at one token (decoding). Weights are random, quantized by compress's
RTN (INT8 per channel; INT4 group 32 asymmetric): the kernels' speed does not depend on the values.

Each pair is timed interleaved (baseline, candidate, baseline, ...) and reported as the ratio of
medians; the max difference is relative to the largest output of the dequantize path.
CPU: torch._weight_int8pack_mm, torch._weight_int4pack_mm_for_cpu and torch._int_mm. CUDA (when
a GPU is present): the kernels compress.kernels dispatches to, through QuantLinear itself.
"""

from __future__ import annotations

import contextlib
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from common import WORK, benchmark_lock, gemma_path, markdown_table, write_results

from compress import kernels, qmodules
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
    ("Gemma-3-270M", "gate/up_proj, 1 token", 1, 640, 2048),
    ("Gemma-3-270M", "down_proj, 1 token", 1, 2048, 640),
    # Where the CPU weight-only kernels stop winning (kernels.CPU_MAX_ROWS comes from these rows).
    ("Gemma-3-270M", "gate/up_proj, 4 tokens", 4, 640, 2048),
    ("Gemma-3-270M", "gate/up_proj, 8 tokens", 8, 640, 2048),
    ("Gemma-3-270M", "gate/up_proj, 16 tokens", 16, 640, 2048),
    ("Gemma-3-270M", "gate/up_proj, 64 tokens", 64, 640, 2048),
    ("MiniLM", "FFN up, 1 token", 1, 384, 1536),
    ("MiniLM", "FFN up, 4 tokens", 4, 384, 1536),
    ("MiniLM", "FFN up, 8 tokens", 8, 384, 1536),
    ("MiniLM", "FFN up, 16 tokens", 16, 384, 1536),
    ("MiniLM", "FFN up, 64 tokens", 64, 384, 1536),
]
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
    packed4, sz4 = kernels.cpu_int4_pack(q4)
    w8_t = q8.data.t()
    cases = [
        (
            "int8 weight-only",
            kernels.INT8_WEIGHT_ONLY,
            lambda: F.linear(x, q8.dequantize(torch.float32), bias),
            lambda: torch._weight_int8pack_mm(x, q8.data, q8.scale) + bias,
        ),
        (
            "int4 weight-only (g32)",
            kernels.INT4_TINYGEMM_CPU,
            lambda: F.linear(x, q4.dequantize(torch.float32), bias),
            lambda: torch._weight_int4pack_mm_for_cpu(x, packed4, GROUP, sz4) + bias,
        ),
    ]
    if m > 16:  # the dynamic path only matters for batches; _int_mm is very slow on CPU
        cases.append(
            (
                "int8 dynamic activations",
                kernels.INT8_DYNAMIC,
                lambda: F.linear(per_token_fake_quant(x), q8.dequantize(torch.float32), bias),
                lambda: kernels.int8_dynamic_matmul(x, w8_t, q8.scale, bias),
            )
        )
    rows = []
    for (scheme, name, baseline, candidate), qt in zip(cases, (q8, q4, q8), strict=False):
        layer = QuantLinear(qt, bias)
        layer.activations = "dynamic" if name == kernels.INT8_DYNAMIC else "none"
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


GEMMA_SCHEMES = {  # RTN, Linear layers only; built once into WORK by `compress quantize`
    "int8 per channel": ["--scheme", "int8"],
    "int4 g128 symmetric": ["--scheme", "int4", "--group-size", "128"],
}
PROMPT = "The capital of France is"
NEW_TOKENS = 8


@contextlib.contextmanager
def dequantize_everywhere():
    """Run every QuantLinear the way it ran before compress.kernels: dequantize then F.linear."""
    kernel_forward = QuantLinear.forward
    QuantLinear.forward = QuantLinear.dequantized_forward
    try:
        yield
    finally:
        QuantLinear.forward = kernel_forward


def gemma_checkpoints() -> dict[str, Path]:
    """The quantized Gemma-3-270M folders, quantized here when missing (before the lock is taken)."""
    out = {}
    for label, options in GEMMA_SCHEMES.items():
        folder = WORK / f"torch-kernels-gemma-{options[1]}"
        if not (folder / "model.safetensors").exists():
            cli = [
                sys.executable,
                "-c",
                "from compress.cli import main; main()",
                "quantize",
                str(gemma_path()),
            ]
            subprocess.run([*cli, "-o", str(folder), *options, "--no-eval", "-q"], check=True)
        out[label] = folder
    return out


def gemma_decoding() -> list[dict]:
    """Greedy generation of NEW_TOKENS tokens with the real Gemma-3-270M: the kernels compress
    picks on CPU against dequantize-then-F.linear everywhere; the generated tokens must agree."""
    import compress as cz

    rows = []
    for label, path in gemma_checkpoints().items():
        model = cz.load(path)
        ids = model.tokenizer(PROMPT, return_tensors="pt")

        def generate(model=model, ids=ids):
            with torch.inference_mode():
                return model.module.generate(**ids, max_new_tokens=NEW_TOKENS, do_sample=False)

        with dequantize_everywhere():
            reference = generate()
        tokens = generate()
        ran = qmodules.kernels_ran(model.module)

        def baseline(generate=generate):
            with dequantize_everywhere():
                generate()

        timing = interleaved(baseline, generate)
        rows.append(
            {"checkpoint": label, "kernels": ran, "same_tokens": bool(torch.equal(tokens, reference))}
            | {"text": model.tokenizer.decode(tokens[0][ids["input_ids"].shape[1] :])}
            | timing
        )
        del model
    return rows


def gemma_table(rows: list[dict]) -> str:
    headers = ["checkpoint", "kernels (last call)", "dequantize ms", "kernels ms", "speedup", "same tokens"]
    body = [
        [
            r["checkpoint"],
            ", ".join(f"{name} x{n}" for name, n in r["kernels"].items()),
            r["dequantize_ms"],
            r["kernel_ms"],
            f"{r['speedup']:.2f}x",
            "yes" if r["same_tokens"] else "NO",
        ]
        for r in rows
    ]
    return markdown_table(headers, body)


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
    torch.manual_seed(0)
    gemma_checkpoints()
    cpu_rows, cuda_rows = [], []
    with benchmark_lock():
        for model, layer, m, k, n in SHAPES:
            shape = {"model": model, "layer": layer, "rows": m, "in": k, "out": n}
            cpu_rows += [{**shape, **row} for row in cpu_cases(m, k, n)]
            if torch.cuda.is_available():
                cuda_rows += [{**shape, **row} for row in cuda_cases(m, k, n)]
            print(f"measured {model} {layer}", flush=True)
        decoding = gemma_decoding()
    cuda_note = (
        f"measured on {torch.cuda.get_device_name()}"
        if torch.cuda.is_available()
        else "not measured: no GPU on this machine (torch.cuda.is_available() is False)"
    )
    md = [
        "# Torch integer kernels vs dequantize-then-F.linear\n",
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads; the machine's 2 cores were shared with other developers "
        "(timings interleaved, ratios of medians). Random weights at each layer's shape, compress RTN "
        f"quantization (INT8 per channel, INT4 group {GROUP} asymmetric); float32 activations on CPU. "
        "Gemma-3-270M shapes come from its config (its float weights are dequantized Q4_K_M).\n",
        "## CPU\n",
        table(cpu_rows),
        "\n## Gemma-3-270M decoding on CPU\n",
        f"Greedy generation of {NEW_TOKENS} tokens after the prompt '{PROMPT}' (batch 1: each new token is "
        "one row, so compress runs the weight-only integer kernels; the 6-token prompt runs them for INT4 "
        "and dequantizes for INT8, whose limit is 4 rows), with "
        "compress's CPU kernel choice against dequantize-then-F.linear in every quantized Linear, "
        "interleaved. The tied embedding / output head stays float32 in these checkpoints. The float "
        "weights are dequantized Q4_K_M.\n",
        gemma_table(decoding),
        "\n## CUDA\n",
        table(cuda_rows) if cuda_rows else f"{cuda_note}.\n",
    ]
    write_results(
        "torch_kernels",
        "\n".join(md),
        {"cpu": cpu_rows, "gemma_decoding": decoding, "cuda": cuda_rows, "cuda_note": cuda_note},
    )


if __name__ == "__main__":
    main()
