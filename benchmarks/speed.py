"""Speed on the machine it runs on (issue 15): every row of a model interleaved, in one run.

    python benchmarks/speed.py                 # MiniLM and Gemma-3-270M
    python benchmarks/speed.py --models minilm # one of them (results: benchmarks/results/speed.{md,json})

Rows, each built from the same safetensors checkpoint and timed in the runtime named after it:
- fp32: the float model in torch, ONNX Runtime (its float ONNX export) and OpenVINO (f32 inference
  precision); bf16: the float model in torch cast to bfloat16, and in OpenVINO with bf16 inference
  precision (what OpenVINO does by default on a CPU with AMX-BF16);
- compress int8 dynamic: `compress quantize --activations dynamic --export onnx` in ONNX Runtime;
- compress int8 static: `--activations static --embeddings --export onnx --export openvino` in ONNX
  Runtime (its model.onnx) and OpenVINO (its IR);
- compress bf16: `--scheme bf16 --export openvino`, its IR in OpenVINO with bf16 inference precision;
- compress default: `compress quantize MODEL` with no option (`--target auto`: what compress picks
  for this CPU), timed in the runtime it chose;
- the peers: ONNX Runtime's `quantize_dynamic` (per channel, on the float export) and NNCF's static
  INT8 (`compress quantize --backend nncf`: nncf.quantize on the float export) in ONNX Runtime and in
  OpenVINO.
Calibration, where a row needs it: the same 64 x 128 tokens of the built-in wiki-train text for
compress and NNCF. Accuracy, through each row's own runtime: MiniLM: mean and worst cosine of its
sentence embeddings to the fp32 torch model's on 200 spam emails no calibration saw, and the linear
probe's retention (compress.evaluate's default task, 300 rows per split); Gemma-3-270M (float32
weights dequantized from Q4_K_M): perplexity on the built-in wiki test text (2,048 tokens, windows of
512). Latency: batch 1 and batch 8 x 128 tokens (Gemma: the prefill of 128 tokens), every row once
per round in alternating order, threads = all cores; the median of each row, and the median of its
per-round speedup over fp32 in ONNX Runtime and over fp32 in its own runtime. A row that cannot be
built or run stays in the table with the reason.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import gc
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from common import WORK, benchmark_lock, gemma_path, markdown_table, minilm_path, write_results

import compress as cz
from compress.model import Model

THREADS = os.cpu_count() or 1
CALIB = ["--calib-samples", "64", "--calib-seq-len", "128"]
# build -> compress quantize arguments (None: built another way, see build())
BUILDS: dict[str, list[str] | None] = {
    "fp32": None,
    "int8-dynamic": ["--activations", "dynamic", "--export", "onnx"],
    "int8-static": [
        "--activations",
        "static",
        "--embeddings",
        "--export",
        "onnx",
        "--export",
        "openvino",
        *CALIB,
    ],
    "bf16": ["--scheme", "bf16", "--export", "openvino"],
    "default": [],
    "ort-dynamic": None,
    "nncf-static": ["--backend", "nncf", *CALIB],
}
# row -> (build, runtime, precision); the first row is the reference of the speedups
ROWS: dict[str, tuple[str, str, str | None]] = {
    "fp32 · onnxruntime": ("fp32", "onnxruntime", None),
    "fp32 · torch": ("fp32", "torch", None),
    "fp32 · openvino": ("fp32", "openvino", "f32"),
    "bf16 · torch": ("fp32", "torch", "bf16"),
    "bf16 · openvino": ("fp32", "openvino", "bf16"),
    "compress int8 dynamic · onnxruntime": ("int8-dynamic", "onnxruntime", None),
    "compress int8 static · onnxruntime": ("int8-static", "onnxruntime", None),
    "compress int8 static · openvino": ("int8-static", "openvino", "f32"),
    "compress bf16 · openvino": ("bf16", "openvino", None),  # its IR, in the 16-bit precision
    "compress default (target auto)": ("default", "auto", None),
    "ORT quantize_dynamic per channel · onnxruntime": ("ort-dynamic", "onnxruntime", None),
    "NNCF static · onnxruntime": ("nncf-static", "onnxruntime", None),
    "NNCF static · openvino": ("nncf-static", "openvino", "f32"),
}
FLOAT_OF = {"onnxruntime": "fp32 · onnxruntime", "torch": "fp32 · torch", "openvino": "fp32 · openvino"}


@dataclasses.dataclass
class Row:
    name: str
    model: Model | None = None  # a Model whose module runs the row (in its runtime)
    runtime: str = ""
    info: dict = dataclasses.field(default_factory=dict)
    failed: str | None = None


def cli(src: Path, out: Path, args: list[str]) -> float:
    """`compress quantize SRC ARGS -o OUT --no-eval`; its seconds. Raises with the CLI's own sentence."""
    started = time.perf_counter()
    command = [sys.executable, "-c", "from compress.cli import main; main()", "quantize", str(src)]
    done = subprocess.run(
        [*command, *args, "-o", str(out), "--no-eval", "--no-cache", "-q"], capture_output=True, text=True
    )
    if done.returncode:
        lines = [line.strip() for line in done.stderr.splitlines() if line.strip()] or ["no message"]
        raise RuntimeError(f"compress quantize exit {done.returncode}: {lines[-1]}")
    return time.perf_counter() - started


def ort_dynamic(fp32_graph: Path, folder: Path) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    folder.mkdir(parents=True, exist_ok=True)
    quant_pre_process(str(fp32_graph), str(folder / "pre.onnx"), skip_symbolic_shape=True)
    quantize_dynamic(
        str(folder / "pre.onnx"), str(folder / "model.onnx"), per_channel=True, weight_type=QuantType.QInt8
    )
    (folder / "pre.onnx").unlink()
    return folder / "model.onnx"


def build(src: Path, work: Path, base: Model, graphs) -> tuple[dict[str, Model | Exception], dict]:
    """Each build as a loaded Model (or the exception that stopped it), and the seconds each took."""
    from compress.onnx.module import OrtModule

    built: dict[str, Model | Exception] = {"fp32": base}
    seconds: dict[str, float] = {}
    for name, args in BUILDS.items():
        if name == "fp32":
            continue
        folder = work / name
        try:
            if name == "ort-dynamic":
                graph, _ = graphs.get(base)
                started = time.perf_counter()
                path = ort_dynamic(graph.path, folder)
                seconds[name] = time.perf_counter() - started
                built[name] = dataclasses.replace(
                    base, module=OrtModule(path, threads=THREADS), checkpoint=path
                )
                continue
            if not folder.exists():
                seconds[name] = cli(src, folder, args)
            built[name] = cz.load(folder)
        except Exception as exc:  # a row that cannot be built is reported, not fatal
            built[name] = exc
        print(f"built {name}: {seconds.get(name, 'reused')}", flush=True)
    return built, seconds


def chosen_runtime(model: Model) -> str:
    """The runtime `compress quantize`'s default recipe timed (its recipe.yaml's first runtime)."""
    recipe = cz.Recipe.load(model.folder / "recipe.yaml")
    return recipe.evaluation.runtimes[0]


def runners(base: Model, built: dict, graphs) -> list[Row]:
    from compress.eval.openvino import OpenVinoModels

    ov = OpenVinoModels(graphs)
    rows = []
    for name, (key, runtime, precision) in ROWS.items():
        model = built[key]
        row = Row(name)
        rows.append(row)
        if isinstance(model, Exception):
            row.failed = f"not built: {model}"
            continue
        try:
            if runtime == "auto":
                runtime = chosen_runtime(model)
            row.runtime = runtime
            row.model, row.info = _runner(model, runtime, precision, graphs, ov)
        except Exception as exc:
            row.failed = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        print(name, row.info or row.failed, flush=True)
    return rows


def _runner(model: Model, runtime: str, precision: str | None, graphs, ov) -> tuple[Model, dict]:
    from compress.onnx.module import OrtModule
    from compress.openvino import compile_model, precisions
    from compress.openvino.module import OvModule

    if runtime == "torch":
        if precision == "bf16":
            return dataclasses.replace(model, module=Bf16Module(model.module)), {"dtype": "bfloat16"}
        return model, {}
    if runtime == "onnxruntime":
        path = model.checkpoint if model.checkpoint and model.checkpoint.suffix == ".onnx" else None
        if path is None:
            graph, _ = graphs.get(model)
            path = graph.path
        return dataclasses.replace(model, module=OrtModule(path, threads=THREADS)), {"graph": str(path)}
    if precision in ("f32", None):  # compress's way: f32, or a 16-bit model's own precision
        compiled = ov.get(model, "cpu", THREADS)
        return dataclasses.replace(model, module=OvModule(compiled.compiled)), {
            "precisions": compiled.precisions,
            "source": compiled.info.get("source"),
        }
    compiled = compile_model(ov.converted(model)[0], "cpu", THREADS, precision=precision)
    return dataclasses.replace(model, module=OvModule(compiled)), {"precisions": precisions(compiled)}


class Bf16Module(torch.nn.Module):
    """The float model cast to bfloat16 (plain 16-bit weights and compute in torch); outputs as float32."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = copy.deepcopy(inner).to(torch.bfloat16).eval()
        self.config = getattr(inner, "config", None)

    def forward(self, *args, **kwargs):
        out = self.inner(*args, **kwargs)
        for key, value in out.items():
            if torch.is_tensor(value) and value.is_floating_point():
                out[key] = value.float()
        return out


def minilm_accuracy(base: Model) -> Callable[[Model], dict]:
    from compress.eval.data import load_labelled
    from compress.eval.tasks import pick_task
    from compress.eval.text import sentence_embeddings

    texts = load_labelled("spam", limit=200).test_texts
    reference = sentence_embeddings(base, texts)
    probe, _ = pick_task(base, "classification", None, limit=300)

    def score(model: Model) -> dict:
        cosine = (sentence_embeddings(model, texts) * reference).sum(dim=1)
        retention = probe.run(base, model).retention
        return {
            "cosine_mean": cosine.mean().item(),
            "cosine_min": cosine.min().item(),
            "retention": retention,
        }

    return score


def gemma_accuracy(base: Model) -> Callable[[Model], dict]:
    from compress.eval.tasks import TaskOptions, pick_task

    task, _ = pick_task(base, "causal-lm", None, options=TaskOptions(max_tokens=2048, window=512))

    def score(model: Model) -> dict:
        result = task.run(base, model)
        return {
            "perplexity": result.value,
            "baseline_perplexity": result.baseline,
            "retention": result.retention,
        }

    return score


def timings(base: Model, rows: list[Row], batch: int, budget_s: float, min_rounds: int) -> None:
    """Each row's median ms and its median per-round speedups, all rows interleaved round by round."""
    from compress.eval.text import latency_inputs

    inputs = latency_inputs(base, batch, 128)
    live = [r for r in rows if r.model is not None]
    times: dict[str, list[float]] = {r.name: [] for r in live}
    with torch.inference_mode():
        for r in live:  # warm-up
            r.model.module(**inputs)
        started, rounds = time.perf_counter(), 0
        while rounds < min_rounds or (time.perf_counter() - started < budget_s and rounds < 100):
            for r in live if rounds % 2 == 0 else list(reversed(live)):
                t = time.perf_counter()
                r.model.module(**inputs)
                times[r.name].append((time.perf_counter() - t) * 1e3)
            rounds += 1
    reference = times.get(next(iter(ROWS)))
    for r in live:
        ms = times[r.name]
        r.info[f"b{batch}_ms"] = statistics.median(ms)
        r.info[f"b{batch}_rounds"] = rounds
        if reference:
            r.info[f"b{batch}_vs_ort_fp32"] = _median_ratio(reference, ms)
        own = times.get(FLOAT_OF.get(r.runtime, ""))
        if own:
            r.info[f"b{batch}_vs_own_fp32"] = _median_ratio(own, ms)
            spread = sorted(f / c for f, c in zip(own, ms, strict=True))
            r.info[f"b{batch}_vs_own_fp32_iqr"] = [spread[len(spread) // 4], spread[(3 * len(spread)) // 4]]


def _median_ratio(reference: list[float], ms: list[float]) -> float:
    return statistics.median(f / c for f, c in zip(reference, ms, strict=True))


def run_model(name: str, src: Path, accuracy: Callable[[Model], Callable[[Model], dict]], budgets) -> dict:
    from compress.eval.runtimes import OnnxGraphs
    from compress.onnx.samples import export_samples

    base = cz.load(src)
    graphs = OnnxGraphs(export_samples(None))
    built, seconds = build(src, WORK / "speed" / name, base, graphs)
    rows = runners(base, built, graphs)
    score = accuracy(base)
    for r in rows:
        if r.model is not None:
            try:
                r.info.update(score(r.model))
            except Exception as exc:
                r.failed = f"accuracy failed: {type(exc).__name__}: {str(exc)[:200]}"
                r.model = None
            print(r.name, {k: v for k, v in r.info.items() if k != "precisions"}, flush=True)
            r.model = fresh_session(r.model)
    with benchmark_lock():
        for batch, budget, min_rounds in budgets:
            timings(base, rows, batch, budget, min_rounds)
    sizes = {key: _size(model) for key, model in built.items() if not isinstance(model, Exception)}
    return {
        "rows": rows,
        "seconds": seconds,
        "sizes": sizes,
        "notes": graphs.notes,
        "fp32_bytes": src.stat().st_size,
    }


def fresh_session(model: Model | None) -> Model | None:
    """An ONNX Runtime row with a new session: scoring feeds it every text length, and each session's
    memory arena keeps the largest it saw (twelve such sessions filled 24 GB and the run was killed)."""
    from compress.onnx.module import OrtModule

    if model is None or not isinstance(model.module, OrtModule):
        return model
    path = model.module.path
    model = dataclasses.replace(model, module=None)
    gc.collect()
    return dataclasses.replace(model, module=OrtModule(path, threads=THREADS))


def _size(model: Model) -> dict:
    """Bytes of what each runtime loads for a build: the checkpoint, model.onnx, the IR."""
    folder = model.checkpoint.parent
    out = {"checkpoint": model.checkpoint.stat().st_size}
    if (folder / "model.onnx").is_file():
        out["onnx"] = sum(p.stat().st_size for p in folder.glob("model.onnx*"))
    ir = folder / "openvino" / "openvino_model.xml"
    if ir.is_file():
        out["openvino"] = ir.stat().st_size + ir.with_suffix(".bin").stat().st_size
    return out


def render(name: str, result: dict, metric: str) -> str:
    headers = ["row", "runtime", metric, "retention", "b1 ms", "b1 vs ORT fp32", "b1 vs own fp32"]
    headers += ["b8 ms", "b8 vs ORT fp32", "b8 vs own fp32 (IQR)", "matmul precisions"]
    table = []
    for r in result["rows"]:
        if r.failed:
            table.append([r.name, r.runtime, r.failed, *[""] * (len(headers) - 3)])
            continue
        i = r.info
        value = (
            f"{i['cosine_mean']:.5f} / {i['cosine_min']:.5f}" if "cosine_mean" in i else i.get("perplexity")
        )
        iqr = i.get("b8_vs_own_fp32_iqr")
        own8 = f"{i.get('b8_vs_own_fp32', 0):.2f} ({iqr[0]:.2f}-{iqr[1]:.2f})" if iqr else ""
        counts = ", ".join(f"{k} ×{v}" for k, v in (i.get("precisions") or {}).items())
        table.append(
            [
                r.name,
                r.runtime,
                value,
                i.get("retention"),
                i.get("b1_ms"),
                i.get("b1_vs_ort_fp32"),
                i.get("b1_vs_own_fp32"),
                i.get("b8_ms"),
                i.get("b8_vs_ort_fp32"),
                own8,
                counts,
            ]
        )
    fp32 = result["fp32_bytes"]
    size_rows = [
        [key, kind, n / 1e6, n / fp32] for key, sizes in result["sizes"].items() for kind, n in sizes.items()
    ]
    return (
        f"## {name}\n\n"
        + markdown_table(headers, table)
        + "\nFiles (what each runtime loads):\n\n"
        + markdown_table(["build", "file", "MB", "ratio to fp32"], size_rows)
        + "\nCompression seconds: "
        + ", ".join(f"{k} {v:.0f}" for k, v in result["seconds"].items())
        + "\n"
    )


def main() -> None:
    from compress.hardware import detect

    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="minilm,gemma")
    parser.add_argument("--quick", action="store_true", help="two rounds per batch size (a smoke test)")
    args = parser.parse_args()
    hw = detect()
    flags = ", ".join(sorted(hw.cpu.features))
    sections, data = [], {}
    plan = {
        "minilm": (
            "MiniLM-L6 (all-MiniLM-L6-v2)",
            minilm_path,
            minilm_accuracy,
            "emb cosine mean / min",
            [(1, 60.0, 10), (8, 120.0, 8)],
        ),
        "gemma": (
            "Gemma-3-270M (float32 weights dequantized from Q4_K_M), prefill",
            gemma_path,
            gemma_accuracy,
            "perplexity",
            [(1, 120.0, 4), (8, 240.0, 3)],
        ),
    }
    for key in args.models.split(","):
        title, path, accuracy, metric, budgets = plan[key]
        budgets = [(batch, 1.0, 2) for batch, _, _ in budgets] if args.quick else budgets
        result = run_model(key, path(), accuracy, budgets)
        sections.append(render(title, result, metric))
        data[key] = {**result, "rows": {r.name: {**r.info, "failed": r.failed} for r in result["rows"]}}
    import onnxruntime
    import openvino

    head = (
        "# Speed on this machine (issue 15)\n\n"
        + f"CPU: `{hw.cpu.model}` ({hw.cpu.isa_class}; {flags}), {THREADS} threads; "
        + f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, "
        + f"openvino {openvino.__version__}.\n\n"
        + (__doc__ or "").split("\n\n", 2)[2]
        + "\n"
    )
    write_results("speed", head + "\n".join(sections), {"cpu": hw.to_dict()["cpu"], **data})


if __name__ == "__main__":
    main()
