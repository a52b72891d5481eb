"""OpenVINO on MiniLM: compress's static INT8 through OpenVINO, against ONNX Runtime and NNCF, in one run.

    python benchmarks/openvino_check.py      # writes benchmarks/results/openvino_check.{md,json}

A first check of the OpenVINO runtime and export (issue 15's full benchmark, benchmarks/speed.py,
comes later). Every row is all-MiniLM-L6-v2 (sentence embeddings), built from the same safetensors:
- fp32: the float ONNX export (compress.onnx.export_onnx), in ONNX Runtime and in OpenVINO;
- compress static: `compress quantize --activations static --onnx-format qdq --export onnx` (calibrated
  per-tensor uint8 ranges, SmoothQuant 0.5), its model.onnx in ONNX Runtime and in OpenVINO;
- compress static + embeddings: the same with `--embeddings`, exported by the openvino exporter
  (`openvino/openvino_model.xml`, int8 tables gathered then rescaled);
- nncf static: `compress quantize --backend nncf` (nncf.quantize, static INT8), its model.onnx in OpenVINO.
Both quantizers calibrate on the same texts (64 x 128 tokens of the built-in wiki-train). OpenVINO
rows are compiled by compress's OpenVINO runtime (compress.eval.openvino: checked against torch,
PERFORMANCE_HINT LATENCY) with inference precision f32 (compress's faithful setting); the -bf16 rows
use bf16 instead for what is not integer, OpenVINO's own default on this CPU (AMX-BF16).
Accuracy: mean and worst cosine of each row's sentence embeddings to the fp32 torch model's on 200
spam emails the calibration never saw. Latency: batch 1 and 8 x 128 tokens, all rows interleaved
round by round, threads = all cores, medians and per-round speedups over fp32 in ONNX Runtime.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from common import WORK, benchmark_lock, markdown_table, minilm_path, write_results

import compress as cz
from compress.model import Model

THREADS = os.cpu_count() or 1
CALIB = ["--calib-samples", "64", "--calib-seq-len", "128"]
BUILDS = {
    "static": ["--activations", "static", "--onnx-format", "qdq", "--export", "onnx", *CALIB],
    "static-emb": ["--activations", "static", "--embeddings", *CALIB],
    "nncf": ["--backend", "nncf", *CALIB],
}
# row -> (model, runtime, OpenVINO inference precision)
ROWS = {
    "fp32 · onnxruntime": ("fp32", "onnxruntime", None),
    "fp32 · openvino": ("fp32", "openvino", "f32"),
    "fp32 · openvino-bf16": ("fp32", "openvino", "bf16"),
    "compress static · onnxruntime": ("static", "onnxruntime", None),
    "compress static · openvino": ("static", "openvino", "f32"),
    "compress static · openvino-bf16": ("static", "openvino", "bf16"),
    "compress static+emb IR · openvino": ("static-emb", "openvino", "f32"),
    "nncf static · openvino": ("nncf", "openvino", "f32"),
    "nncf static · openvino-bf16": ("nncf", "openvino", "bf16"),
}


def build(src: Path, out: Path) -> dict[str, Path]:
    """The quantized folders (made once; delete benchmarks/work/openvino_check to rebuild)."""
    from compress.exporters import export_config_from_dict, run_exports

    folders = {}
    for name, args in BUILDS.items():
        folder = out / name
        if not folder.exists():
            command = [sys.executable, "-c", "from compress.cli import main; main()", "quantize", str(src)]
            started = time.perf_counter()
            subprocess.run([*command, *args, "-o", str(folder), "--no-eval", "-q"], check=True)
            if name == "static-emb":
                onnx = export_config_from_dict({"format": "onnx", "quant_format": "qdq"})
                run_exports(folder, [onnx, export_config_from_dict("openvino")])
            print(f"built {name} in {time.perf_counter() - started:.0f} s", flush=True)
        folders[name] = folder
    return folders


def runners(base: Model, models: dict[str, Model]) -> tuple[dict[str, Model], dict[str, dict]]:
    """Each row as a Model whose module runs it (for accuracy and timing), and what it ran."""
    from compress.eval.openvino import OpenVinoModels
    from compress.eval.runtimes import OnnxGraphs
    from compress.onnx.module import OrtModule
    from compress.onnx.samples import export_samples
    from compress.openvino import compile_model, precisions
    from compress.openvino.module import OvModule

    graphs = OnnxGraphs(export_samples(None))
    ov = OpenVinoModels(graphs)
    out, info = {}, {}
    for row, (key, runtime, precision) in ROWS.items():
        model = models[key]
        if runtime == "onnxruntime":
            graph, _ = graphs.get(model)
            module, what = OrtModule(graph.path, threads=THREADS), {"bytes": graph.nbytes}
        elif precision == "f32":  # exactly what the evaluator's openvino runtime runs
            compiled = ov.get(model, "cpu", THREADS)
            module, what = OvModule(compiled.compiled), {**compiled.info, "precisions": compiled.precisions}
        else:
            compiled = compile_model(ov.converted(model)[0], "cpu", THREADS, precision=precision)
            module, what = OvModule(compiled), {"precisions": precisions(compiled)}
        out[row] = dataclasses.replace(base, module=module)
        info[row] = what
        print(row, what.get("precisions"), flush=True)
    info["notes"] = graphs.notes
    return out, info


def accuracy(base: Model, rows: dict[str, Model]) -> dict[str, dict]:
    from compress.eval.data import load_labelled
    from compress.eval.text import sentence_embeddings

    texts = load_labelled("spam", limit=200).test_texts
    reference = sentence_embeddings(base, texts)
    scores = {}
    for row, model in rows.items():
        cosine = (sentence_embeddings(model, texts) * reference).sum(dim=1)
        scores[row] = {"cosine_mean": cosine.mean().item(), "cosine_min": cosine.min().item()}
        print(row, scores[row], flush=True)
    return scores


def timings(base: Model, rows: dict[str, Model], batch: int, budget_s: float) -> dict[str, dict]:
    """Median ms per row and the median per-round speedup over the first row, interleaved."""
    import torch

    from compress.eval.text import latency_inputs

    inputs = latency_inputs(base, batch, 128)
    calls: dict[str, Callable[[], object]] = {}
    for row, model in rows.items():
        calls[row] = lambda m=model: m.module(**inputs)
    times: dict[str, list[float]] = {row: [] for row in calls}
    with torch.inference_mode():
        for call in calls.values():  # warm-up
            call()
        started, rounds = time.perf_counter(), 0
        while rounds < 5 or (time.perf_counter() - started < budget_s and rounds < 100):
            order = list(calls) if rounds % 2 == 0 else list(reversed(calls))
            for row in order:
                t = time.perf_counter()
                calls[row]()
                times[row].append((time.perf_counter() - t) * 1e3)
            rounds += 1
    first = times[next(iter(times))]
    return {
        row: {
            f"b{batch}_ms": statistics.median(ms),
            f"b{batch}_speedup": statistics.median(f / c for f, c in zip(first, ms, strict=True)),
            f"b{batch}_rounds": rounds,
        }
        for row, ms in times.items()
    }


def sizes(src: Path, folders: dict[str, Path]) -> list[list[object]]:
    fp32 = src.stat().st_size
    files = {
        "model.safetensors (fp32)": src,
        "static: model.onnx (QDQ, float embeddings)": folders["static"] / "model.onnx",
        "static+emb: model.safetensors": folders["static-emb"] / "model.safetensors",
        "static+emb: model.onnx": folders["static-emb"] / "model.onnx",
        "static+emb: openvino_model.xml + .bin": folders["static-emb"] / "openvino" / "openvino_model.xml",
        "nncf: model.onnx": folders["nncf"] / "model.onnx",
    }
    out = []
    for what, path in files.items():
        paths = [path, path.with_suffix(".bin")] if path.suffix == ".xml" else [path]
        size = sum(p.stat().st_size for p in paths)
        out.append([what, size / 1e6, size / fp32])
    return out


def main() -> None:
    src = minilm_path()
    folders = build(src, WORK / "openvino_check")
    base = cz.load(src)
    models = {"fp32": base, **{name: cz.load(folder) for name, folder in folders.items()}}
    rows, info = runners(base, models)
    scores = accuracy(base, rows)
    with benchmark_lock():
        timed = {row: {} for row in rows}
        for batch, budget in ((1, 60.0), (8, 180.0)):
            for row, values in timings(base, rows, batch, budget).items():
                timed[row].update(values)
    table = []
    for row in rows:
        counts = ", ".join(f"{k} ×{v}" for k, v in (info[row].get("precisions") or {}).items())
        t, s = timed[row], scores[row]
        cells = [row, counts or "(ONNX Runtime)", f"{s['cosine_mean']:.5f}", f"{s['cosine_min']:.5f}"]
        table.append([*cells, t["b1_ms"], t["b1_speedup"], t["b8_ms"], t["b8_speedup"]])
    headers = ["row", "OpenVINO matmul precisions", "cosine mean", "cosine min", "b1 ms", "b1 speedup"]
    headers += ["b8 ms", "b8 speedup"]
    size_table = markdown_table(["file", "MB", "ratio to fp32"], sizes(src, folders))
    import onnxruntime
    import openvino

    versions = f"openvino {openvino.__version__}, onnxruntime {onnxruntime.__version__}"
    notes = [
        f"{THREADS} threads (all cores) on `{cpu_model()}` with AVX-512 VNNI, AMX-INT8 and AMX-BF16; "
        f"{versions}. The machine was shared with other jobs while this ran: timings are indicative.",
        f"rounds: b1 {timed[next(iter(rows))]['b1_rounds']}, b8 {timed[next(iter(rows))]['b8_rounds']}",
        *info["notes"],
    ]
    head = "# OpenVINO check on MiniLM-L6\n\n" + (__doc__ or "").split("\n\n", 2)[2] + "\n"
    text = head + markdown_table(headers, table) + "\nFile sizes:\n\n" + size_table
    data = {"rows": {r: {**info[r], **scores[r], **timed[r]} for r in rows}, "sizes": sizes(src, folders)}
    write_results(
        "openvino_check", text + "".join(f"\n- {n}" for n in notes) + "\n", {**data, "notes": notes}
    )


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


if __name__ == "__main__":
    main()
