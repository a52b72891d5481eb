"""BF16 and FP16 (`compress quantize --scheme bf16|fp16`) on MiniLM and Gemma-3-270M, in one run.

    python benchmarks/bf16.py            # writes benchmarks/results/bf16.{md,json}
    python benchmarks/bf16.py --quick    # fewer texts and rounds: a smoke run
    python benchmarks/bf16.py --minilm   # MiniLM only

Each compress row is made by the command a user runs, `compress quantize <model> --scheme S
[--embeddings]`, which streams the checkpoint tensor by tensor, and is loaded with `compress.load`
(16-bit layers, norms as float32 islands). Rows:
- fp32: the float checkpoint in torch (the reference for size, accuracy and speed);
- bf16, fp16: Linear and Embedding weights in 16 bits (`--embeddings`, the default of these schemes);
- bf16 linear only: `--scheme bf16 --no-embeddings` (embedding tables stay float32);
- alt bf16 whole: not a compress output; the fp32 model cast to bf16 whole (`.to(torch.bfloat16)`,
  norms in bf16 too), the design compress measured its float32 norm islands against;
- onnxruntime fp32 / fp16: the float export and compress's fp16 graph (`--export onnx`); bf16 has no
  ONNX Runtime form (the row says why);
- openvino f32 / bf16: the fp32 export, and an f32 graph of compress's bf16 weights compiled with the
  INFERENCE_PRECISION_HINT that compress.precision.openvino_precision_hint gives for the bf16
  checkpoint; the runtime graph's MatMul precisions are listed.
Accuracy (MiniLM): mean and worst sentence-embedding cosine to fp32 torch, and the spam probe's
accuracy retention, on the spam test half (texts no row was fitted on). Gemma: perplexity on the
built-in wiki test text (the float32 weights are dequantized Q4_K_M: see common.gemma_path).
Latency: batch 1 and 8 x 128 tokens (Gemma: prefill), every row of a model interleaved round by round
under the benchmark lock, threads = all cores; the speedup is the median of per-round ratios to fp32
torch; the whole timing is run twice (the machine is shared: see the load in the header).
"""

from __future__ import annotations

import copy
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

from common import WORK, benchmark_lock, gemma_path, markdown_table, minilm_path, write_results

import compress as cz

QUICK = "--quick" in sys.argv
THREADS = os.cpu_count() or 1
OUT = WORK / "bf16"
MINILM_TIMING = {"budget_s": 8 if QUICK else 40, "min_rounds": 3 if QUICK else 12}
GEMMA_TIMING = {"budget_s": 5 if QUICK else 45, "min_rounds": 1 if QUICK else 3}
REPEATS = 1 if QUICK else 2


def cli_quantize(src: Path, name: str, args: list[str]) -> tuple[Path, float]:
    out = OUT / name
    cli = [sys.executable, "-c", "from compress.cli import main; main()", "quantize", str(src), *args]
    started = time.perf_counter()
    done = subprocess.run([*cli, "-o", str(out), "--no-eval", "-q"], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"compress quantize {' '.join(args)}: {done.stderr.strip()[-400:]}")
    return out / "model.safetensors", time.perf_counter() - started


def environment() -> dict:
    import onnxruntime
    import openvino
    import torch

    from compress.hardware import detect

    cpu = detect().cpu
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_int8")
    return {
        "cpu": cpu.model,
        "flags": [f for f in wanted if f in cpu.features],
        "threads": THREADS,
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "openvino": openvino.__version__,
        "load_before": os.getloadavg(),
    }


class OvModule:
    """An OpenVINO compiled model called like a transformers encoder (first output as last_hidden_state)."""

    def __init__(self, graph: Path, hint: str):
        import openvino as ov

        core = ov.Core()
        config = {"INFERENCE_PRECISION_HINT": hint, "INFERENCE_NUM_THREADS": THREADS}
        self.compiled = core.compile_model(core.read_model(str(graph)), "CPU", config)
        self.names = [i.get_any_name() for i in self.compiled.inputs]

    def __call__(self, **inputs):
        import torch

        out = self.compiled({n: inputs[n].numpy() for n in self.names})[self.compiled.output(0)]
        return SimpleNamespace(last_hidden_state=torch.from_numpy(out))

    def matmul_precisions(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for op in self.compiled.get_runtime_model().get_ordered_ops():
            info = op.get_rt_info()
            if info["layerType"].astype(str) in ("FullyConnected", "MatMul"):
                key = f"{info['layerType'].astype(str)} {info['runtimePrecision'].astype(str)}"
                counts[key] = counts.get(key, 0) + 1
        return counts


def as_model(base, module, family: str = "encoder"):
    from compress.model import Model

    return Model(module=module, family=family, config=base.config, tokenizer=base.tokenizer)


def minilm_models(base, src: Path, notes: list[str]) -> tuple[dict, dict]:
    """name -> (Model, file bytes or None), and how long each command took."""
    import torch

    import compress.eval  # noqa: F401  (first: compress.onnx.samples imported alone hits an import cycle)
    from compress.onnx import export_onnx
    from compress.onnx.module import OrtModule
    from compress.onnx.samples import export_samples
    from compress.precision import openvino_precision_hint

    models = {"fp32": (base, src.stat().st_size)}
    seconds = {}
    for name, args in (
        ("bf16", ["--scheme", "bf16", "--embeddings"]),
        ("fp16", ["--scheme", "fp16", "--embeddings", "--export", "onnx"]),
        ("bf16 linear only", ["--scheme", "bf16", "--no-embeddings"]),
    ):
        path, seconds[name] = cli_quantize(src, name.replace(" ", "-"), args)
        models[name] = (cz.load(path), path.stat().st_size)
    models["alt bf16 whole"] = (as_model(base, copy.deepcopy(base.module).to(torch.bfloat16)), None)
    sample, _ = export_samples(None)(base)
    fp32_graph = export_onnx(base.module, sample, OUT / "onnx-fp32").path
    models["onnxruntime fp32"] = (as_model(base, OrtModule(fp32_graph, threads=THREADS)), None)
    fp16_graph = OUT / "fp16" / "model.onnx"
    models["onnxruntime fp16"] = (as_model(base, OrtModule(fp16_graph, threads=THREADS)), None)
    notes.append(f"onnxruntime bf16: unavailable: {bf16_onnx_reason(models['bf16'][0])}.")
    bf16 = models["bf16"][0]
    twin = copy.deepcopy(base.module)  # compress's bf16 weights, widened exactly, in an f32 graph
    twin.load_state_dict({k: v.float() for k, v in bf16.module.state_dict().items()}, strict=False)
    bf16_graph = export_onnx(twin, sample, OUT / "onnx-bf16-weights").path
    hint, why = openvino_precision_hint(bf16.compression)
    notes.append(f"openvino bf16: INFERENCE_PRECISION_HINT {hint} ({why}).")
    for name, graph, h in (("openvino f32", fp32_graph, "f32"), ("openvino bf16", bf16_graph, hint)):
        ov = OvModule(graph, h)
        notes.append(f"{name}: runtime graph {ov.matmul_precisions()}.")
        models[name] = (as_model(base, ov), None)
    return models, seconds


def bf16_onnx_reason(model) -> str:
    from compress.errors import Unavailable
    from compress.onnx.float16 import graph_check_cosine

    try:
        graph_check_cosine(model.module)
    except Unavailable as exc:
        return str(exc)
    return "(available)"


def minilm_accuracy(base, models: dict) -> dict[str, dict]:
    from compress.eval.tasks import pick_task

    limit = 32 if QUICK else 200
    emb, _ = pick_task(base, "embedding", limit=limit)
    probe, _ = pick_task(base, "classification", "spam", limit=limit)
    out = {}
    for name, (model, _) in models.items():
        e, p = emb.run(base, model), probe.run(base, model)
        out[name] = {
            "cosine_mean": e.details["cosine_mean"],
            "cosine_min": e.details["cosine_min"],
            "probe_retention": p.retention,
        }
        print(name, out[name], flush=True)
    return out


def timings(base, models: dict, shapes, budget_s: float, min_rounds: int) -> dict[str, dict]:
    """Median ms and median per-round speedup over fp32 torch, per shape; all rows interleaved."""
    import torch

    from compress.eval.text import latency_inputs

    out: dict[str, dict] = {name: {} for name in models}
    for batch, seq in shapes:
        inputs = latency_inputs(base, batch, seq)
        times: dict[str, list[float]] = {name: [] for name in models}
        with torch.inference_mode():
            for model, _ in models.values():
                model.module(**inputs)  # warm-up
            started, rounds = time.perf_counter(), 0
            while rounds < min_rounds or (time.perf_counter() - started < budget_s and rounds < 200):
                order = list(models.items())
                for name, (model, _) in order if rounds % 2 == 0 else order[::-1]:
                    t = time.perf_counter()
                    model.module(**inputs)
                    times[name].append((time.perf_counter() - t) * 1e3)
                rounds += 1
        for name, values in times.items():
            ratios = [f / c for f, c in zip(times["fp32"], values, strict=True)]
            out[name][f"b{batch}_ms"] = statistics.median(values)
            out[name][f"b{batch}_speedup"] = statistics.median(ratios)
            out[name][f"b{batch}_rounds"] = rounds
    return out


def timed_twice(base, models: dict, shapes, settings: dict) -> dict[str, dict]:
    runs = []
    with benchmark_lock():
        for _ in range(REPEATS):
            runs.append(timings(base, models, shapes, **settings))
    merged = {name: {} for name in models}
    for i, run in enumerate(runs, 1):
        for name, values in run.items():
            merged[name].update({f"run{i}_{k}": v for k, v in values.items()})
    return merged


def minilm(notes: list[str]) -> list[dict]:
    import torch

    torch.set_num_threads(THREADS)
    src = minilm_path()
    base = cz.load(src)
    models, seconds = minilm_models(base, src, notes)
    accuracy = minilm_accuracy(base, models)
    timed = timed_twice(base, models, ((1, 128), (8, 128)), MINILM_TIMING)
    fp32_bytes = src.stat().st_size
    rows = []
    for name, (model, nbytes) in models.items():
        row = {"row": name, "size_ratio": nbytes / fp32_bytes if nbytes else None, **accuracy[name]}
        row.update(timed[name], seconds=seconds.get(name))
        if model.compression is not None:
            row["stats"] = model.compression.stats
        rows.append(row)
    return rows


def gemma(notes: list[str]) -> list[dict]:
    import torch

    from compress.eval.data import load_text
    from compress.eval.tasks import Perplexity

    torch.set_num_threads(THREADS)
    src = gemma_path()
    base = cz.load(src)
    models = {"fp32": (base, src.stat().st_size)}
    seconds = {}
    for scheme in ("bf16", "fp16"):
        try:
            path, seconds[scheme] = cli_quantize(src, f"gemma-{scheme}", ["--scheme", scheme, "--embeddings"])
        except RuntimeError as exc:  # fp16 can refuse a weight beyond its range: reported, not hidden
            notes.append(f"Gemma {scheme}: {exc}")
            continue
        models[scheme] = (cz.load(path), path.stat().st_size)
    task = Perplexity(load_text("wiki"), "wiki (built-in, test half)", 512, None, 512 if QUICK else 2048)
    ids = task.token_ids(base)
    rows = []
    for name, (model, nbytes) in models.items():
        ppl, tokens = task.perplexity(model, ids)
        rows.append({"row": name, "size_ratio": nbytes / src.stat().st_size, "perplexity": ppl})
        rows[-1].update(tokens_scored=tokens, seconds=seconds.get(name))
        print(rows[-1], flush=True)
    timed = timed_twice(base, models, ((1, 128), (8, 128)), GEMMA_TIMING)
    for row in rows:
        row.update(timed[row["row"]])
        row["ppl_increase"] = row["perplexity"] - rows[0]["perplexity"]
        if row["perplexity"] != row["perplexity"]:  # nan
            notes.append(
                f"Gemma {row['row']}: perplexity is nan: {first_overflow(models[row['row']][0], ids)}."
            )
    return rows


def first_overflow(model, ids) -> str:
    """Where a 16-bit model's activations first stop being finite (float16's range ends at 65504)."""
    import torch

    found: list[str] = []

    def hook(name):
        def check(module, args, out):
            t = out[0] if isinstance(out, tuple) else out
            if not found and isinstance(t, torch.Tensor) and t.is_floating_point() and not t.isfinite().all():
                found.append(f"the output of {name} ({type(module).__name__}, {t.dtype}) is not finite")

        return check

    handles = [m.register_forward_hook(hook(n)) for n, m in model.module.named_modules() if n]
    with torch.inference_mode():
        model.module(input_ids=ids[None, :512])
    for h in handles:
        h.remove()
    return found[0] if found else "no layer output overflows on the first window"


def table(rows: list[dict], extra: list[tuple[str, str]]) -> str:
    headers = ["row", "size ratio", *(h for h, _ in extra)]
    keys = ["row", "size_ratio", *(k for _, k in extra)]
    for run in range(1, REPEATS + 1):
        headers += [f"b1 x{run}", f"b8 ms {run}", f"b8 x{run}"]
        keys += [f"run{run}_b1_speedup", f"run{run}_b8_ms", f"run{run}_b8_speedup"]

    def cell(row: dict, key: str):
        value = row.get(key)
        if key.startswith("cosine") and value is not None:
            return f"{value:.6f}"  # the differences are in the fifth decimal
        return round(value, 4) if key == "size_ratio" and value else value

    return markdown_table(headers, [[cell(r, k) for k in keys] for r in rows])


def render(env: dict, minilm_rows: list[dict], gemma_rows: list[dict], notes: list[str]) -> str:
    head = (
        "# BF16 and FP16 on MiniLM-L6 and Gemma-3-270M (torch, ONNX Runtime, OpenVINO)\n\n"
        f"CPU: {env['cpu']}; flags: {', '.join(env['flags'])}; threads {env['threads']}; torch "
        f"{env['torch']}, onnxruntime {env['onnxruntime']}, openvino {env['openvino']}.\n"
        f"The machine (2 cores) was shared with other jobs: load average {env['load_before'][0]:.1f} "
        f"before, {env['load_after'][0]:.1f} after; rows are interleaved and the timing was run "
        f"{REPEATS} times (x1, x2: speedup over fp32 torch, median of per-round ratios).\n\n"
    )
    body = (__doc__ or "").split("\n\n", 2)[2] + "\n## MiniLM-L6 (batch 1 and 8 x 128 tokens)\n\n"
    body += table(minilm_rows, [("emb cosine", "cosine_mean"), ("worst cosine", "cosine_min"),
                                ("probe retention", "probe_retention")])  # fmt: skip
    body += "\n## Gemma-3-270M (deq. Q4_K_M; prefill 1 and 8 x 128 tokens)\n\n"
    if gemma_rows:
        body += table(gemma_rows, [("perplexity", "perplexity"), ("increase", "ppl_increase")])
    else:
        body += "Not run in this run (`--minilm`, or stopped before Gemma finished).\n"
    return head + body + "".join(f"\n- {n}" for n in notes) + "\n"


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    env = environment()
    notes: list[str] = []
    name = "bf16-quick" if QUICK else "bf16"
    minilm_rows = minilm(notes)
    env["load_after"] = os.getloadavg()
    data = {"environment": env, "minilm": minilm_rows, "gemma": [], "notes": notes}
    write_results(name, render(env, minilm_rows, [], notes), data)  # kept if Gemma fails
    if "--minilm" in sys.argv:
        return
    gemma_rows = gemma(notes)
    env["load_after"] = os.getloadavg()
    data = {"environment": env, "minilm": minilm_rows, "gemma": gemma_rows, "notes": notes}
    write_results(name, render(env, minilm_rows, gemma_rows, notes), data)


if __name__ == "__main__":
    main()
