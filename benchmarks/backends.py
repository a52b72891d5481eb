"""`--backend compress` against `--backend nncf` on MiniLM, INT8 and INT4, in one run.

    python benchmarks/backends.py      # writes benchmarks/results/backends.{md,json}

Every row is made by the same command, `compress quantize <minilm> ... --backend B --export onnx`,
and is an ONNX graph run by ONNX Runtime's CPU provider (one thread each: the machine is shared):
- fp32: the float export (compress.onnx.export_onnx), the reference for size and speed;
- compress-int8: --scheme int8 --activations dynamic (MatMulIntegerToFloat);
- nncf-int8: --scheme int8 --backend nncf (nncf.quantize, static INT8, 64 x 128-token wiki-train texts);
- compress-int4 / nncf-int4: --scheme int4 (group 128, symmetric, round to nearest; MatMulNBits).
Embedding lookups stay float in every row (compress's default) except the -embeddings rows
(--embeddings: NNCF's own default for INT8; for INT4 NNCF writes a graph ONNX Runtime refuses).
Accuracy: spam probe retention and mean sentence-embedding cosine to the fp32 torch model (200 test
emails); latency at batch 1 and 8 x 128 tokens, all rows interleaved round by round under the
benchmark lock, medians and per-round speedups over fp32; time: the whole command, from the
safetensors checkpoint to model.onnx (process start and the fp32 export included).
Measurement helpers are peers.py's, so the two tables are measured alike.
"""

from __future__ import annotations

import sys

import peers
from common import WORK, benchmark_lock, markdown_table, minilm_path, write_results

import compress as cz

NNCF = ["--backend", "nncf"]
CALIB = ["--calib-samples", "64", "--calib-seq-len", "128"]
ROWS = {
    "compress-int8": ["--scheme", "int8", "--activations", "dynamic"],
    "nncf-int8": ["--scheme", "int8", *NNCF, *CALIB],
    "nncf-int8-embeddings": ["--scheme", "int8", *NNCF, *CALIB, "--embeddings"],
    "compress-int4": ["--scheme", "int4"],
    "nncf-int4": ["--scheme", "int4", *NNCF],
    "nncf-int4-embeddings": ["--scheme", "int4", *NNCF, "--embeddings"],
}


def quantize_row(src, name: str, args: list[str]):
    """peers.cli_quantize, with the command's own error sentence kept when it fails."""
    import subprocess

    try:
        return peers.cli_quantize(src, name, args)
    except subprocess.CalledProcessError:
        again = [sys.executable, "-c", "from compress.cli import main; main()", "quantize", str(src), *args]
        out = ["--export", "onnx", "-o", str(peers.OUT / name), "--no-eval", "-q"]
        done = subprocess.run([*again, *out], capture_output=True)
        lines = done.stderr.decode().strip().splitlines() or [f"exit {done.returncode}"]
        raise RuntimeError(lines[-1]) from None


def main() -> None:
    peers.OUT = WORK / "backends"
    peers.OUT.mkdir(parents=True, exist_ok=True)
    src = minilm_path()
    base = cz.load(src)
    graphs, seconds, notes = {}, {}, []
    graphs["fp32"], seconds["fp32"] = peers.fp32_export(base)
    for name, args in ROWS.items():
        try:
            graphs[name], seconds[name] = quantize_row(src, name, args)
        except Exception as exc:  # a backend that fails on this model is reported, not hidden
            notes.append(f"{name}: failed: {str(exc).strip().splitlines()[0][:400]}")
    fp32_bytes = graphs["fp32"].stat().st_size
    rows = []
    for name, path in graphs.items():
        size = sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
        row = {"row": name, "kernels": peers.kernels(path), "size_ratio": size / fp32_bytes}
        row.update(peers.accuracy(base, path), seconds=seconds[name])
        rows.append(row)
        print(row, flush=True)
    with benchmark_lock():
        timed = peers.timings(base, graphs)
    for row in rows:
        row.update(timed[row["row"]])
    headers = ["row", "kernels", "size ratio", "probe retention", "emb cosine", "b1 speedup", "b8 ms"]
    headers += ["b8 speedup", "time s"]
    keys = ["row", "kernels", "size_ratio", "probe_retention", "cosine_mean", "b1_speedup", "b8_ms"]
    table = [[r[k] for k in [*keys, "b8_speedup", "seconds"]] for r in rows]
    notes.append("Measured on a 2-core machine shared with other developers; ratios are per round.")
    head = "# Backends on MiniLM-L6: compress vs NNCF behind `compress quantize --backend`\n\n"
    text = head + (__doc__ or "").split("\n\n", 2)[2] + "\n" + markdown_table(headers, table)
    write_results(
        "backends", text + "".join(f"\n- {n}" for n in notes) + "\n", {"rows": rows, "notes": notes}
    )


if __name__ == "__main__":
    main()
