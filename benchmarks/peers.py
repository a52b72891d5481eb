"""CPU speed through ONNX Runtime: compress's integer exports against the peers' quantizers, in one run.

    python benchmarks/peers.py            # MiniLM; writes benchmarks/results/peers.{md,json}
    python benchmarks/peers.py --gemma    # Gemma-3-270M too (dequantized Q4_K_M weights, see common.py)
    python benchmarks/peers.py --time-only  # only the latency of the graphs the last run left

Every row is an ONNX graph run by ONNX Runtime's CPU provider with the same thread count:
- fp32: the baseline's float export (compress.onnx.export_onnx), the reference for speed and size;
- compress-int8-dynamic: `compress quantize --scheme int8 --activations dynamic --export onnx`
  (7-bit weights, per-token 8-bit activations, MatMulIntegerToFloat);
- compress-int4: `compress quantize --scheme int4 --export onnx` (RTN, group 128, MatMulNBits);
- ort-dynamic-per-tensor / -per-channel: onnxruntime.quantization.quantize_dynamic (after
  quant_pre_process, as its guide asks) on the fp32 export;
- nncf-quantize: nncf.quantize (static INT8, transformer model type) on the fp32 export with 64
  calibration texts; nncf-compress-weights: nncf.compress_weights INT4_SYM group 128 on it.
Compression time: compress from the safetensors checkpoint to the ONNX file (export included);
peers from the same checkpoint too, i.e. the fp32 export time plus their own.
Accuracy (MiniLM): spam probe accuracy retention and mean sentence-embedding cosine to the fp32
torch model over 200 test emails. Latency: batch 1 and 8 at 128 tokens, all rows interleaved
round by round (one thread each: the machine is shared), medians and speedups over fp32.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import WORK, benchmark_lock, markdown_table, minilm_path, write_results

import compress as cz
from compress.eval.tasks import pick_task
from compress.eval.text import latency_inputs
from compress.model import Model

THREADS = 1
SHAPES = ((1, 128), (8, 128))
BUDGET_S = 60.0  # timing per shape, shared by all rows
LIMIT = 200
OUT = WORK / "peers"


def cli_quantize(source: Path, name: str, args: list[str]) -> tuple[Path, float]:
    out = OUT / name
    cli = [sys.executable, "-c", "from compress.cli import main; main()", "quantize", str(source)]
    started = time.perf_counter()
    subprocess.run([*cli, *args, "--export", "onnx", "-o", str(out), "--no-eval", "-q"], check=True)
    return out / "model.onnx", time.perf_counter() - started


def fp32_export(base: Model) -> tuple[Path, float]:
    from compress.eval.runtimes import export_samples
    from compress.onnx import export_onnx

    sample, _ = export_samples(None)(base)
    started = time.perf_counter()
    graph = export_onnx(base.module, sample, OUT / "fp32")
    return graph.path, time.perf_counter() - started


def ort_dynamic(fp32: Path, per_channel: bool) -> tuple[Path, float]:
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    folder = OUT / f"ort-dynamic-{'per-channel' if per_channel else 'per-tensor'}"
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    quant_pre_process(str(fp32), str(folder / "pre.onnx"), skip_symbolic_shape=True)
    quantize_dynamic(
        str(folder / "pre.onnx"),
        str(folder / "model.onnx"),
        per_channel=per_channel,
        weight_type=QuantType.QInt8,
    )
    return folder / "model.onnx", time.perf_counter() - started


def calibration_feeds(base: Model, n: int = 64) -> list[dict]:
    from compress.calib import load_calibration

    data = load_calibration("wiki-train", tokenizer=base.tokenizer, n_samples=n, seq_len=128)
    feeds = []
    for sample in data.samples:
        ids = sample["input_ids"]
        feeds.append({"input_ids": ids.numpy(), "attention_mask": sample["attention_mask"].numpy()})
    return feeds


def nncf_row(fp32: Path, base: Model, mode: str) -> tuple[Path, float]:
    import nncf
    import onnx

    folder = OUT / f"nncf-{mode}"
    folder.mkdir(parents=True, exist_ok=True)
    model = onnx.load(str(fp32))
    started = time.perf_counter()
    if mode == "quantize":
        dataset = nncf.Dataset(calibration_feeds(base))
        result = nncf.quantize(model, dataset, model_type=nncf.ModelType.TRANSFORMER, subset_size=64)
    else:
        result = nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT4_SYM, group_size=128)
    onnx.save(result, str(folder / "model.onnx"))
    return folder / "model.onnx", time.perf_counter() - started


def onnx_model(base: Model, path: Path) -> Model:
    from compress.onnx.module import OrtModule

    return Model(
        module=OrtModule(path, threads=2),
        family="encoder",
        checkpoint=path.parent / "model.safetensors",
        config=base.config,
        tokenizer=base.tokenizer,
    )


def accuracy(base: Model, graph: Path) -> dict:
    cand = onnx_model(base, graph)
    emb, _ = pick_task(base, "embedding", limit=LIMIT)
    probe, _ = pick_task(base, "classification", "spam", limit=LIMIT)
    e, p = emb.run(base, cand), probe.run(base, cand)
    return {
        "probe_accuracy": p.value,
        "probe_retention": p.retention,
        "cosine_mean": e.details["cosine_mean"],
        "cosine_min": e.details["cosine_min"],
    }


def kernels(path: Path) -> str:
    import onnx

    ops = {n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node}
    wanted = (
        "MatMulIntegerToFloat",
        "MatMulNBits",
        "DynamicQuantizeMatMul",
        "MatMulInteger",
        "QLinearMatMul",
    )
    found = [op for op in wanted if op in ops]
    if "QuantizeLinear" in ops and not found:
        found = ["QDQ"]
    return ", ".join(found) or "float"


def timings(base: Model, graphs: dict[str, Path]) -> dict[str, dict]:
    """Median latency of every graph per shape, interleaved round by round."""
    from compress.onnx import open_session, session_feeds

    sessions = {name: open_session(path, "cpu", THREADS) for name, path in graphs.items()}
    out: dict[str, dict] = {name: {} for name in graphs}
    for batch, seq in SHAPES:
        inputs = latency_inputs(base, batch, seq)
        feeds = {
            n: session_feeds(s, {k: inputs[k] for k in ("input_ids", "attention_mask")})
            for n, s in sessions.items()
        }
        times: dict[str, list[float]] = {n: [] for n in sessions}
        for name, s in sessions.items():  # warm-up
            s.run(None, feeds[name])
        started = time.perf_counter()
        rounds = 0
        while rounds < 5 or (time.perf_counter() - started < BUDGET_S and rounds < 200):
            for name, s in sessions.items():
                t = time.perf_counter()
                s.run(None, feeds[name])
                times[name].append((time.perf_counter() - t) * 1e3)
            rounds += 1
        for name in sessions:
            out[name][f"b{batch}_ms"] = statistics.median(times[name])
            # Speedup per round (same moment for both), then the median: robust to load swings.
            ratios = [f / c for f, c in zip(times["fp32"], times[name], strict=True)]
            out[name][f"b{batch}_speedup"] = statistics.median(ratios)
        out["fp32"][f"b{batch}_rounds"] = rounds
    return out


def minilm() -> tuple[list[dict], list[str]]:
    src = minilm_path()
    base = cz.load(src)
    OUT.mkdir(parents=True, exist_ok=True)
    graphs, seconds, notes = {}, {}, []
    graphs["fp32"], export_s = fp32_export(base)
    seconds["fp32"] = export_s
    builders = {
        "compress-int8-dynamic": lambda: cli_quantize(
            src, "compress-int8-dynamic", ["--activations", "dynamic"]
        ),
        "compress-int4": lambda: cli_quantize(src, "compress-int4", ["--scheme", "int4"]),
        "ort-dynamic-per-tensor": lambda: ort_dynamic(graphs["fp32"], False),
        "ort-dynamic-per-channel": lambda: ort_dynamic(graphs["fp32"], True),
        "nncf-quantize": lambda: nncf_row(graphs["fp32"], base, "quantize"),
        "nncf-compress-weights": lambda: nncf_row(graphs["fp32"], base, "compress-weights"),
    }
    for name, build in builders.items():
        try:
            graphs[name], own = build()
            seconds[name] = own if name.startswith("compress") else own + export_s
        except Exception as exc:  # a peer that fails on this model is reported, not hidden
            notes.append(f"{name}: failed: {str(exc).strip().splitlines()[0][:200]}")
    rows = []
    fp32_bytes = graphs["fp32"].stat().st_size
    for name, path in graphs.items():
        row = {"model": "MiniLM-L6", "row": name, "kernels": kernels(path), "compress_s": seconds[name]}
        row["size_ratio"] = sum(p.stat().st_size for p in path.parent.glob(path.name + "*")) / fp32_bytes
        row.update(accuracy(base, path))
        rows.append(row)
        print(row, flush=True)
    with benchmark_lock():
        timed = timings(base, graphs)
    for row in rows:
        row.update(timed[row["row"]])
    return rows, notes


class WithMask:
    """Calls an ONNX causal LM with input_ids only (as the perplexity task does), adding the mask."""

    def __init__(self, ort_module):
        self.inner = ort_module

    def __call__(self, input_ids):
        import torch

        return self.inner(input_ids=input_ids, attention_mask=torch.ones_like(input_ids))


def gemma() -> tuple[list[dict], list[str]]:
    """Gemma-3-270M (dequantized Q4_K_M weights): fp32, compress INT4 / INT8 dynamic, ORT per-channel,
    NNCF INT4; perplexity on 1,024 tokens of the wiki test half; latency at batch 1 only (the
    262k-word logits of batch 8 x 128 are 1 GB, which would time the output copy, not the model)."""
    from common import gemma_path

    from compress.eval.data import load_text
    from compress.eval.tasks import Perplexity
    from compress.onnx.module import OrtModule

    src = gemma_path()
    base = cz.load(src)
    global OUT
    OUT = WORK / "peers-gemma"
    OUT.mkdir(parents=True, exist_ok=True)
    graphs, seconds, notes = {}, {}, []
    graphs["fp32"], export_s = fp32_export(base)
    seconds["fp32"] = export_s
    builders = {
        "compress-int4": lambda: cli_quantize(src, "compress-int4", ["--scheme", "int4"]),
        "compress-int8-dynamic": lambda: cli_quantize(
            src, "compress-int8-dynamic", ["--activations", "dynamic"]
        ),
        "ort-dynamic-per-channel": lambda: ort_dynamic(graphs["fp32"], True),
        "nncf-compress-weights": lambda: nncf_row(graphs["fp32"], base, "compress-weights"),
    }
    for name, build in builders.items():
        try:
            graphs[name], own = build()
            seconds[name] = own if name.startswith("compress") else own + export_s
        except Exception as exc:
            notes.append(f"Gemma {name}: failed: {str(exc).strip().splitlines()[0][:200]}")
    task = Perplexity(load_text("wiki"), "wiki (test half)", 256, 256, 1024)
    ids = task.token_ids(base)
    base_ppl, _ = task.perplexity(base, ids)
    fp32_bytes = sum(p.stat().st_size for p in graphs["fp32"].parent.glob("model.onnx*"))
    rows = []
    for name, path in graphs.items():
        model = Model(
            module=WithMask(OrtModule(path, threads=2)), family="causal-lm", tokenizer=base.tokenizer
        )
        ppl, _ = task.perplexity(model, ids)
        size = sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
        rows.append(
            {
                "model": "Gemma-3-270M (deq. Q4_K_M)",
                "row": name,
                "kernels": kernels(path),
                "compress_s": seconds[name],
                "size_ratio": size / fp32_bytes,
                "perplexity": ppl,
                "torch_fp32_perplexity": base_ppl,
            }
        )
        print(rows[-1], flush=True)
    global SHAPES
    SHAPES = ((1, 128),)
    with benchmark_lock():
        timed = timings(base, graphs)
    for row in rows:
        row.update(timed[row["row"]])
    return rows, notes


def render(rows: list[dict], notes: list[str], partial: bool) -> str:
    headers = [
        "model",
        "row",
        "kernels",
        "size ratio",
        "probe retention",
        "emb cosine",
        "b1 ms",
        "b1 speedup",
        "b8 ms",
        "b8 speedup",
        "compress s",
    ]
    table = [
        [
            r["model"],
            r["row"],
            r["kernels"],
            r["size_ratio"],
            r.get("probe_retention"),
            r.get("cosine_mean"),
            r.get("b1_ms"),
            r.get("b1_speedup"),
            r.get("b8_ms"),
            r.get("b8_speedup"),
            r["compress_s"],
        ]
        for r in rows
    ]
    head = "# CPU speed through ONNX Runtime: compress vs peers" + (" (PARTIAL)" if partial else "") + "\n\n"
    text = head + (__doc__ or "").split("\n\n", 2)[2] + "\n" + markdown_table(headers, table)
    return text + "".join(f"\n- {n}" for n in notes) + "\n"


def time_only() -> None:
    """Time the MiniLM graphs a previous run left in WORK/peers and fill the committed table's
    latency columns (for when the accuracy part ran but the lock was not had in time)."""
    import json

    from common import RESULTS

    data = json.loads((RESULTS / "peers.json").read_text())
    rows = [r for r in data["rows"] if r["model"] == "MiniLM-L6"]
    graphs = {r["row"]: OUT / r["row"] / "model.onnx" for r in rows}
    with benchmark_lock():
        timed = timings(cz.load(minilm_path()), graphs)
    for row in rows:
        row.update(timed[row["row"]])
    notes = [n for n in data["notes"] if not n.startswith("PARTIAL: accuracy")]
    notes.append("Latency timed by a later `peers.py --time-only` on the graphs of the accuracy run.")
    data.update(notes=notes)
    write_results("peers", render(data["rows"], notes, data["partial"]), data)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gemma", action="store_true")
    parser.add_argument("--time-only", action="store_true", help="time the graphs of the last run")
    args = parser.parse_args()
    if args.time_only:
        time_only()
        return
    rows, notes = minilm()
    partial = not args.gemma
    if partial:
        notes.append("partial: Gemma-3-270M rows not run yet.")
    else:
        more, gemma_notes = gemma()
        rows, notes = rows + more, notes + gemma_notes
    write_results("peers", render(rows, notes, partial), {"rows": rows, "notes": notes, "partial": partial})


if __name__ == "__main__":
    main()
