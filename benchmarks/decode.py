"""Greedy decoding speed of Gemma-3-270M in torch on CPU: float32, bfloat16, compress INT8 and INT4
(RTN, the default settings), before and after the CPU kernels took bfloat16 activations. One run.

    python benchmarks/decode.py [--threads 2] [--rounds 3] [--prompt-tokens 98] [--new-tokens 64]
    # writes benchmarks/results/decode.{md,json} (decode-<threads>t.{md,json} for another thread count)
    ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/decode.py
    # the same on an AVX2-only CPU's code paths (torch, MKL and oneDNN kernels), e.g. AMD EPYC Zen 2/3:
    # writes benchmarks/results/decode-avx2.{md,json}

Issue 16 measured compress INT4 decoding 2.4x slower than float32 on an AMX CPU although
torch._weight_int4pack_mm_for_cpu ran in all 126 decoder Linear layers. "before" rows run compress's
previous CPU kernel choice (float32 activations into torch's weight-only kernels, at most 4 / 16 rows;
reproduced below as `legacy_plan_cpu`), "now" rows the current one (compress.kernels). Each model
decodes with the evaluator's own greedy loop (compress.eval.decoders.torch_decoder: KV cache, no stop
at end-of-sequence), all models once per round in a rotating order, for several rounds: medians and
the min-max spread are reported, and each model's tokens are compared with float32's. A profile of
16 decode steps splits each step's time into the tied 262144 x 640 output head, the decoder layers'
Linear layers and everything else. The float32 weights are Gemma's Q4_K_M GGUF dequantized to
float32 (benchmarks/common.py), so "float32" is itself dequantized Q4_K_M.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from common import WORK, benchmark_lock, gemma_path, markdown_table, write_results

import compress as cz
from compress import kernels
from compress.eval.decoders import torch_decoder
from compress.eval.generation import GenerationSettings, prompt_ids
from compress.qmodules import kernels_ran

CHECKPOINTS = {  # folder name under WORK -> `compress quantize` options (RTN)
    "decode-int8": ["--scheme", "int8"],
    "decode-int4": ["--scheme", "int4"],  # default: group 128, symmetric
    "decode-int8-emb": ["--scheme", "int8", "--embeddings"],
    "decode-int4-emb": ["--scheme", "int4", "--embeddings"],
}
# label, checkpoint (None: the float32 model), dtype, kernel choice; --models picks by checkpoint
MODELS = [
    ("float32", None, torch.float32, "now"),
    ("bfloat16 (float32 file, cast)", None, torch.bfloat16, "now"),
    ("compress INT8, before", "decode-int8", torch.float32, "before"),
    ("compress INT8, now", "decode-int8", torch.float32, "now"),
    ("compress INT4 g128, before", "decode-int4", torch.float32, "before"),
    ("compress INT4 g128, now", "decode-int4", torch.float32, "now"),
    ("compress INT8 + embeddings, now", "decode-int8-emb", torch.float32, "now"),
    ("compress INT4 g128 + embeddings, now", "decode-int4-emb", torch.float32, "now"),
]
MODEL_KEYS = {"float32": None, "bfloat16": None, **{name[len("decode-") :]: name for name in CHECKPOINTS}}
PROFILED = (
    "float32",
    "compress INT4 g128, before",
    "compress INT4 g128, now",
    "compress INT4 g128 + embeddings, now",
)
DEFAULT_THREADS = 2
HEAD = 262_144
MATMULS = (
    "aten::mm",
    "aten::addmm",
    "aten::_weight_int4pack_mm_for_cpu",
    "aten::_weight_int8pack_mm",
)  # Gemma's vocabulary: the tied output head is HEAD x 640


def legacy_plan_cpu(module, dtype):
    """compress.kernels' CPU choice before this change: float32 activations straight into torch's
    weight-only kernels (whose float32 path is a scalar loop), for at most 4 (INT8) / 16 (INT4) rows."""
    qt = module.qweight
    if module.activations != "none" or dtype != torch.float32:
        return kernels._dequantize("legacy: float32 inputs only")
    most = {"int8": 4, "int4": 16}[qt.scheme]
    if qt.scheme == "int8":
        tensors = {"weight": module.weight, "scale": module.weight_scale.to(torch.float32)}
        name = kernels.INT8_WEIGHT_ONLY
    else:
        packed, scales_and_zeros = kernels.cpu_int4_pack(qt)  # float32 scales, as before
        tensors = {"packed": packed, "scales_and_zeros": scales_and_zeros}
        name = kernels.INT4_TINYGEMM_CPU
    return kernels._Plan(kernels.Kernel(name, "legacy"), tensors, max_rows=most, outside="legacy")


@contextlib.contextmanager
def dequantize_everywhere():
    """Every QuantLinear as dequantize-then-F.linear in float32: the exact reference of its kernels."""
    from compress.qmodules import QuantLinear

    kernel_forward = QuantLinear.forward
    QuantLinear.forward = QuantLinear.dequantized_forward
    try:
        yield
    finally:
        QuantLinear.forward = kernel_forward


def exact_agreement(models: list[dict], ids, new_tokens: int) -> None:
    """For each "now" quantized model: how many first greedy tokens its kernels share with the same
    checkpoint run through the dequantize path (float32 throughout)."""
    for entry in models:
        if entry["label"].startswith("compress") and entry["label"].endswith("now"):
            with dequantize_everywhere():
                exact = entry["decoder"].generate(ids, new_tokens, time.perf_counter).tokens
            entry["same_as_exact"] = int((exact == entry["tokens"]).long().cumprod(1).sum())


@contextlib.contextmanager
def legacy_kernels():
    current = kernels._plan_cpu
    kernels._plan_cpu = legacy_plan_cpu
    try:
        yield
    finally:
        kernels._plan_cpu = current


def checkpoints() -> dict[str, Path]:
    """The quantized Gemma folders, made here by `compress quantize` when missing."""
    out = {}
    for name, options in CHECKPOINTS.items():
        folder = WORK / name
        if not (folder / "model.safetensors").exists():
            cli = [sys.executable, "-c", "from compress.cli import main; main()", "quantize"]
            subprocess.run(
                [*cli, str(gemma_path()), "-o", str(folder), *options, "--no-eval", "-q"], check=True
            )
        out[name] = folder
    return out


def load_models(args) -> tuple[list[dict], torch.Tensor]:
    """Every model, loaded and warmed up once (which builds and caches each layer's kernel plan),
    and the prompt: the first prompt_tokens tokens of the built-in wiki text."""
    folders = checkpoints()
    models = []
    ids = None
    for label, folder, dtype, choice in chosen(args.models):
        model = cz.load(folders[folder] if folder else gemma_path())
        model.module.to(dtype)
        if ids is None:
            settings = GenerationSettings(prompt_tokens=args.prompt_tokens, new_tokens=args.new_tokens)
            ids = prompt_ids(model, 1, settings)
        decoder = torch_decoder(model, "cpu", torch.get_num_threads())
        with legacy_kernels() if choice == "before" else contextlib.nullcontext():
            decoder.generate(ids, 2, time.perf_counter)
        path = (folders[folder] if folder else gemma_path().parent) / "model.safetensors"
        models.append({"label": label, "model": model, "decoder": decoder, "mb": path.stat().st_size / 1e6})
    return models, ids


def chosen(keys: str) -> list[tuple]:
    """The MODELS rows --models names: float32 (always, the reference), bfloat16, int8, int4,
    int8-emb, int4-emb (each checkpoint's before and now rows)."""
    wanted = {k.strip() for k in keys.split(",")}
    unknown = wanted - set(MODEL_KEYS)
    if unknown:
        raise SystemExit(f"--models: unknown {sorted(unknown)}; choose from {', '.join(MODEL_KEYS)}")
    bf16 = "bfloat16" in wanted
    return [
        m
        for m in MODELS
        if m[0] == "float32" or (m[2] == torch.bfloat16 and bf16) or (m[1] and m[1][7:] in wanted)
    ]


def measure(models: list[dict], ids, rounds: int, new_tokens: int) -> None:
    """Rounds of every model once, in a rotating order; results appended to each model's dict."""
    for entry in models:
        entry.update(ttft=[], rate=[], tokens=None, seconds=[])
    for round_no in range(rounds):
        order = models[round_no % len(models) :] + models[: round_no % len(models)]
        for entry in order:
            run = entry["decoder"].generate(ids, new_tokens, time.perf_counter)
            entry["ttft"].append(run.ttft_s * 1e3)
            entry["rate"].append((new_tokens - 1) / (run.total_s - run.ttft_s))
            entry["tokens"] = run.tokens
            entry["kernels"] = kernels_ran(entry["model"].module)
        print(f"round {round_no + 1}/{rounds} done", flush=True)


def profile_steps(entry: dict, ids, steps: int = 16) -> dict:
    """ms per decode step: the tied output head, the decoder's Linear layers, everything else."""
    from torch.profiler import ProfilerActivity, profile

    module = entry["model"].module
    with torch.inference_mode():
        out = module(input_ids=ids, use_cache=True, logits_to_keep=1)
        cache, token = out.cache, out.logits[:, -1].argmax(-1, keepdim=True)
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            start = time.perf_counter()
            for _ in range(steps):
                out = module(input_ids=token, cache=cache, use_cache=True, logits_to_keep=1)
                cache, token = out.cache, out.logits[:, -1].argmax(-1, keepdim=True)
            wall = (time.perf_counter() - start) * 1e3 / steps
    parts = {"output head": 0.0, "decoder Linear layers": 0.0}
    for event in prof.events():
        shapes = event.input_shapes or []
        if event.name in MATMULS:
            head = any(HEAD in shape for shape in shapes if shape)
            where = "output head" if head else "decoder Linear layers"
            parts[where] += event.self_cpu_time_total / 1e3 / steps
    parts["everything else"] = wall - sum(parts.values())
    return {"step_ms": wall, **parts}


def isa() -> str:
    """The vector code paths this run used: torch's ATen kernels, and MKL / oneDNN when limited."""
    limits = [
        f"{k}={os.environ[k]}" for k in ("MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA") if k in os.environ
    ]
    ran = f"ATen kernels {torch.backends.cpu.get_cpu_capability()}"
    return ran + (f" ({', '.join(limits)})" if limits else "")


def cpu_description() -> tuple[str, list[str]]:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    name = next((line.split(":", 1)[1].strip() for line in text.splitlines() if "model name" in line), "")
    flags = set(
        next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    )
    wanted = ["avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile"]
    return name or platform.processor(), [f for f in wanted if f in flags]


def summary_rows(models: list[dict]) -> list[dict]:
    reference = models[0]
    rows = []
    for entry in models:
        same = (entry["tokens"] == reference["tokens"]).long()
        ratio = [r / b for r, b in zip(entry["rate"], reference["rate"], strict=True)]
        rows.append(
            {
                "model": entry["label"],
                "file_mb": entry["mb"],
                "decode_tokens_per_s": statistics.median(entry["rate"]),
                "decode_min": min(entry["rate"]),
                "decode_max": max(entry["rate"]),
                "vs_float32": statistics.median(ratio),
                "ttft_ms": statistics.median(entry["ttft"]),
                "ttft_min": min(entry["ttft"]),
                "ttft_max": max(entry["ttft"]),
                "same_tokens_as_float32": int(same.cumprod(1).sum()),
                "same_tokens_as_dequantize_path": entry.get("same_as_exact", ""),
                "kernels": entry.get("kernels", {}),
                "profile": entry.get("profile"),
            }
        )
    return rows


def markdown(rows: list[dict], args, load: tuple, cpu: tuple) -> str:
    kernel_text = lambda k: ", ".join(f"{n} x{c}" for n, c in k.items()) or "-"  # noqa: E731
    table = markdown_table(
        [
            "model",
            "file MB",
            "decode tokens/s (min-max)",
            "x float32",
            "TTFT ms (min-max)",
            f"same first tokens as float32 (of {args.new_tokens})",
            "same first tokens as its dequantize path",
            "quantized Linear kernels (last step)",
        ],
        [
            [
                r["model"],
                f"{r['file_mb']:.0f}",
                f"{r['decode_tokens_per_s']:.2f} ({r['decode_min']:.2f}-{r['decode_max']:.2f})",
                f"{r['vs_float32']:.2f}x",
                f"{r['ttft_ms']:.0f} ({r['ttft_min']:.0f}-{r['ttft_max']:.0f})",
                r["same_tokens_as_float32"],
                r["same_tokens_as_dequantize_path"],
                kernel_text(r["kernels"]),
            ]
            for r in rows
        ],
    )
    profiled = [r for r in rows if r["profile"]]
    profile = markdown_table(
        [
            "model",
            "ms per decode step",
            "output head (262144 x 640)",
            "decoder Linear layers",
            "everything else",
        ],
        [
            [
                r["model"],
                *(
                    f"{r['profile'][k]:.1f}"
                    for k in ("step_ms", "output head", "decoder Linear layers", "everything else")
                ),
            ]
            for r in profiled
        ],
    )
    name, flags = cpu
    return "\n".join(
        [
            "# Gemma-3-270M greedy decoding in torch on CPU\n",
            f"{name} ({', '.join(flags)}), {isa()}, torch {torch.__version__}, {args.threads} thread(s); "
            f"prompt {args.prompt_tokens} tokens (built-in wiki text), {args.new_tokens} new tokens, "
            f"batch 1, {args.rounds} rounds (every model once per round, rotating order; medians, min-max). "
            f"Load average {load[0]:.1f} at the start and {load[1]:.1f} at the end: the machine's 2 cores "
            "were shared with up to 8 other jobs, so absolute numbers are indicative; compare within a "
            "round. The float32 weights are Gemma's Q4_K_M GGUF dequantized to float32.\n",
            table,
            "\n## Where a decode step's time goes (torch.profiler, 16 steps after the prompt)\n",
            profile,
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--prompt-tokens", type=int, default=98)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--models", default=",".join(MODEL_KEYS), help="comma-separated: %(default)s")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    checkpoints()
    with benchmark_lock():
        start_load = os.getloadavg()[0]
        models, ids = load_models(args)
        measure(models, ids, args.rounds, args.new_tokens)
        exact_agreement(models, ids, args.new_tokens)
        for entry in models:
            if entry["label"] in PROFILED:
                entry["profile"] = profile_steps(entry, ids)
        end_load = os.getloadavg()[0]
    rows = summary_rows(models)
    cpu = cpu_description()
    data = {
        "args": vars(args),
        "cpu": cpu[0],
        "flags": cpu[1],
        "isa": isa(),
        "load": [start_load, end_load],
        "rows": rows,
    }
    name = "decode" + ("" if args.threads == DEFAULT_THREADS else f"-{args.threads}t")
    name += "-avx2" if os.environ.get("ATEN_CPU_CAPABILITY") == "avx2" else ""
    write_results(name, markdown(rows, args, (start_load, end_load), cpu), data)


if __name__ == "__main__":
    main()
