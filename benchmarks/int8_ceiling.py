"""How fast can INT8 be on this CPU through ONNX Runtime? The bare kernels, and the model's bound.

    python benchmarks/int8_ceiling.py     # writes benchmarks/results/int8_ceiling.{md,json}

1. Bare GEMMs at MiniLM's shapes (batch 8 x 128 tokens = 1,024 rows; 384 -> 384, 384 -> 1536,
   1536 -> 384), one thread, interleaved: float MatMul against ONNX Runtime's integer kernels
   (MatMulIntegerToFloat on uint8 codes, MatMulInteger, and DynamicQuantizeMatMul, which also
   quantizes its float input). The speedup of the integer kernels is the ceiling of what INT8
   can give the Linear layers on this CPU.
2. Where the float model's time goes (ONNX Runtime's profiler, fp32 export of MiniLM at batch 8 x
   128): the share in the Linear layers' MatMuls. With the rest left as it is, the whole model
   cannot run faster than total / (rest + linear / kernel speedup) (Amdahl's bound).
"""

from __future__ import annotations

import json
import statistics
import time
from collections import Counter
from pathlib import Path

import numpy as np
from common import WORK, benchmark_lock, markdown_table, minilm_path, write_results

ROWS = 1024
SHAPES = ((384, 384), (384, 1536), (1536, 384))
ROUNDS = 40


def cpu_flags() -> list[str]:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    flags = next(
        (line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []
    )
    return sorted(f for f in flags if "avx" in f or "vnni" in f or "amx" in f)


def gemm_graphs(k: int, n: int) -> dict[str, bytes]:
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.integers(-63, 64, (k, n), dtype=np.int8), "w")
    w_float = numpy_helper.from_array(rng.standard_normal((k, n), dtype=np.float32) * 0.05, "w")
    scales = numpy_helper.from_array(np.full(n, 0.01, np.float32), "ws")
    one = numpy_helper.from_array(np.array(1.0, np.float32), "one")
    zero = numpy_helper.from_array(np.array(128, np.uint8), "zp")

    def graph(nodes, inits, input_type) -> bytes:
        g = helper.make_graph(
            nodes,
            "g",
            [helper.make_tensor_value_info("x", input_type, [ROWS, k])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [ROWS, n])],
            inits,
        )
        opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
        model = helper.make_model(g, opset_imports=opsets)
        model.ir_version = 8
        return model.SerializeToString()

    ms = "com.microsoft"
    return {
        "float MatMul": graph([helper.make_node("MatMul", ["x", "w"], ["y"])], [w_float], TensorProto.FLOAT),
        "MatMulIntegerToFloat u8xs8": graph(
            [helper.make_node("MatMulIntegerToFloat", ["x", "w", "one", "ws", "zp"], ["y"], domain=ms)],
            [weight, scales, one, zero],
            TensorProto.UINT8,
        ),
        "MatMulInteger u8xs8": graph(
            [
                helper.make_node("MatMulInteger", ["x", "w", "zp"], ["i"]),
                helper.make_node("Cast", ["i"], ["y"], to=1),
            ],
            [weight, zero],
            TensorProto.UINT8,
        ),
        "DynamicQuantizeMatMul (quantizes x too)": graph(
            [helper.make_node("DynamicQuantizeMatMul", ["x", "w", "ws"], ["y"], domain=ms)],
            [weight, scales],
            TensorProto.FLOAT,
        ),
    }


def session(model: bytes | str):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def bare_gemms() -> list[dict]:
    rows = []
    rng = np.random.default_rng(1)
    for k, n in SHAPES:
        sessions = {name: session(g) for name, g in gemm_graphs(k, n).items()}
        feeds = {
            name: rng.integers(0, 256, (ROWS, k), dtype=np.uint8)
            if s.get_inputs()[0].type == "tensor(uint8)"
            else rng.standard_normal((ROWS, k), dtype=np.float32)
            for name, s in sessions.items()
        }
        times: dict[str, list[float]] = {name: [] for name in sessions}
        for _ in range(ROUNDS):
            for name, s in sessions.items():
                started = time.perf_counter()
                s.run(None, {"x": feeds[name]})
                times[name].append(time.perf_counter() - started)
        for name in sessions:
            ratios = [f / c for f, c in zip(times["float MatMul"], times[name], strict=True)]
            rows.append(
                {
                    "shape": f"{ROWS}x{k} @ {k}x{n}",
                    "kernel": name,
                    "ms": statistics.median(times[name]) * 1e3,
                    "speedup": statistics.median(ratios),
                }
            )
    return rows


def op_profile(path: Path) -> tuple[Counter, float, float]:
    """Per-op-type kernel time (ms per run) of an ONNX graph at batch 8 x 128, the time of the
    MatMuls whose second input is a weight (the Linear layers, not attention's), and the median run."""
    import onnx
    import onnxruntime as ort

    import compress as cz
    from compress.eval.text import latency_inputs
    from compress.onnx import session_feeds

    graph = onnx.load(str(path), load_external_data=False).graph
    weights = {i.name for i in graph.initializer}
    linear_nodes = {n.name for n in graph.node if n.op_type == "MatMul" and n.input[1] in weights}
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.enable_profiling = True
    options.profile_file_prefix = str(WORK / "int8-ceiling-profile")
    s = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    inputs = latency_inputs(cz.load(minilm_path()), 8, 128)
    feeds = session_feeds(s, {k: inputs[k] for k in ("input_ids", "attention_mask")})
    runs = []
    for _ in range(6):
        started = time.perf_counter()
        s.run(None, feeds)
        runs.append(time.perf_counter() - started)
    trace = Path(s.end_profiling())
    events = json.loads(trace.read_text())
    trace.unlink()
    per_op: Counter = Counter()
    linear = 0.0
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            ms = event["dur"] / 1e3 / len(runs)
            per_op[event["args"]["op_name"]] += ms
            if event["name"].removesuffix("_kernel_time") in linear_nodes:
                linear += ms
    if not linear:
        raise RuntimeError("the profile names no Linear MatMul node (ONNX Runtime renamed them?)")
    return per_op, linear, statistics.median(runs) * 1e3


def main() -> None:
    from compress.model import load
    from compress.onnx import export_onnx
    from compress.onnx.samples import export_samples

    base = load(minilm_path())
    fp32 = WORK / "int8-ceiling" / "fp32"
    if not (fp32 / "model.onnx").exists():
        sample, _ = export_samples(None)(base)
        export_onnx(base.module, sample, fp32)
    with benchmark_lock():
        gemms = bare_gemms()
        per_op, linear, run_ms = op_profile(fp32 / "model.onnx")
    best = max(
        statistics.median(r["speedup"] for r in gemms if r["kernel"] == k)
        for k in {r["kernel"] for r in gemms}
        if k != "float MatMul"
    )
    kernel_total = sum(per_op.values())
    bound = kernel_total / (kernel_total - linear + linear / best)
    flags = cpu_flags()
    summary = {
        "cpu_flags": flags,
        "best_integer_gemm_speedup": best,
        "fp32_kernel_ms": kernel_total,
        "fp32_run_ms": run_ms,
        "linear_matmul_ms": linear,
        "linear_share": linear / kernel_total,
        "amdahl_bound": bound,
        "fp32_ops_ms": dict(per_op.most_common()),
    }
    table = markdown_table(
        ["shape", "kernel", "ms (median)", "speedup over float"],
        [[r["shape"], r["kernel"], r["ms"], r["speedup"]] for r in gemms],
    )
    ops = markdown_table(["op", "ms per run"], [[op, ms] for op, ms in per_op.most_common(12)])
    text = (
        "# INT8 on this CPU: the kernels' ceiling and the model's bound\n\n"
        + (__doc__ or "").split("\n\n", 2)[2]
        + f"\nCPU vector flags: {', '.join(flags) or 'unknown'} (no VNNI: u8 x s8 products go through "
        "vpmaddubsw + vpmaddwd, about twice float FMA throughput at best).\n\n"
        + "## Bare GEMMs, one thread, 1,024 rows\n\n"
        + table
        + "\n## MiniLM fp32 export, batch 8 x 128, one thread: kernel time by operator\n\n"
        + ops
        + f"\n- Linear-layer MatMuls: {linear:.1f} ms of {kernel_total:.1f} ms kernel time "
        f"({linear / kernel_total:.0%}).\n"
        f"- Best integer GEMM speedup above (median over shapes): {best:.2f}x.\n"
        f"- Amdahl bound for INT8 Linear layers with everything else unchanged: **{bound:.2f}x**.\n"
    )
    write_results("int8_ceiling", text, {"gemms": gemms, **summary})
    print(text)


if __name__ == "__main__":
    main()
