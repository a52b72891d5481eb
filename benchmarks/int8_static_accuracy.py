"""Static INT8 accuracy on MiniLM: compress's static variants against NNCF's, on the same calibration.

    python benchmarks/int8_static_accuracy.py --samples 64 --seq-len 128   # as benchmarks/speed.py
    python benchmarks/int8_static_accuracy.py --samples 8 --limit 20 --quick   # a quick check

Every row quantizes all-MiniLM-L6-v2 with static INT8 (per-tensor uint8 activation ranges and int8
per-channel weights) on one CalibrationData object (windows of the built-in wiki-train text), so
all rows calibrate on exactly the same tokens:
- compress rows: `compress.quantize(..., activations="static", data=calibration, ...)` with the
  smoothing strength searched per input ("auto", the default), fixed at 0.5 (the default before) or
  off, each with and without bias correction; weight bits are compress's choice for this CPU. Each
  is scored through the torch module, which rounds exactly as the exported graph does; the default
  row is also exported as `--export onnx` does (QOperator graph, checked against torch) and scored
  in ONNX Runtime;
- nncf: `compress quantize --backend nncf` (nncf.quantize, model type TRANSFORMER: SmoothQuant,
  MinMax ranges, FastBiasCorrection; embeddings left float) on the same samples, scored in ONNX
  Runtime (its graph is the only form it has).
Scores, all against the float torch model, on text the calibration never saw: sentence-embedding
cosine (mean-pooled, mean and worst) on the spam test emails and the spam probe's accuracy
retention (compress.evaluate's default task for an encoder), and on paragraphs of the wiki test
half (the calibration draws from wiki-train only); and, for reference, on the first calibration
windows themselves. With --sensitivity: the default model with one layer input quantized at a time
(every other input left in float; weights int8 everywhere), wiki cosine on 32 paragraphs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from pathlib import Path

from common import WORK, markdown_table, minilm_path, write_results

import compress as cz
from compress.model import Model

LIMIT = 200  # spam test emails and wiki paragraphs scored
CALIB_SCORED = 16  # calibration windows scored (at full length)
SENSITIVITY = 32  # wiki paragraphs scored per layer in the sensitivity table
FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "amx_bf16", "avx512_bf16")
# compress rows: (name, quantize settings); weight bits are compress's choice for this CPU (8 with
# VNNI or AMX, 7 without), as in the default `compress quantize --activations static`.
DEFAULT = "compress smooth auto + bias correction (default)"
ROWS = [
    (DEFAULT, {}),  # also exported to ONNX (QOperator) and scored in ONNX Runtime
    ("compress smooth auto, no bias correction", {"bias_correction": False}),
    ("compress smooth 0.5 + bias correction", {"smooth": 0.5}),
    ("compress smooth 0.5, no bias correction (before)", {"smooth": 0.5, "bias_correction": False}),
    ("compress smooth off + bias correction", {"smooth": 0}),
]


def cpu() -> dict:
    """The CPU model, the ISA flags that matter for INT8, cores and the load when the run started."""
    info = {"model": platform.processor() or platform.machine(), "flags": [], "cores": os.cpu_count()}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            info["model"] = value.strip()
        if key.strip() == "flags":
            have = set(value.split())
            info["flags"] = [f for f in FLAGS if f in have]
            break
    info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    return info


def wiki_paragraphs(n: int) -> list[str]:
    from compress.eval.data import load_text

    paragraphs = [p.strip() for p in load_text("wiki").split("\n\n") if len(p.strip()) > 300]
    step = max(1, len(paragraphs) // n)
    return paragraphs[::step][:n]


class Scorer:
    """Cosines to the float model on three text sets, and the spam probe; the float side is kept."""

    def __init__(self, base: Model, calibration, limit: int):
        from compress.eval.tasks import pick_task
        from compress.eval.text import sentence_embeddings

        self.base = base
        self.probe, _ = pick_task(base, "classification", "spam", limit=limit)
        self.wiki = wiki_paragraphs(limit)
        self.wiki_base = sentence_embeddings(base, self.wiki)
        self.windows = calibration.samples[:CALIB_SCORED]
        self.windows_base = self.embed_windows(base.module)

    def embed_windows(self, module):
        import torch

        out = []
        with torch.inference_mode():
            for sample in self.windows:
                hidden = module(**sample).last_hidden_state
                out.append(torch.nn.functional.normalize(hidden.mean(1).float(), dim=-1))
        return torch.cat(out)

    def wiki_cosine(self, module, n: int | None = None):
        from compress.eval.text import sentence_embeddings

        texts = self.wiki[:n]
        return (self.wiki_base[: len(texts)] * sentence_embeddings(self.as_model(module), texts)).sum(1)

    def as_model(self, module) -> Model:
        b = self.base
        return Model(
            module=module, family="encoder", checkpoint=b.checkpoint, config=b.config, tokenizer=b.tokenizer
        )

    def score(self, module) -> dict:
        probe = self.probe.run(self.base, self.as_model(module))
        wiki = self.wiki_cosine(module)
        calib = (self.windows_base * self.embed_windows(module)).sum(1)
        return {
            "spam_cosine": probe.details["embedding_cosine_mean"],
            "spam_worst": probe.details["embedding_cosine_min"],
            "probe_retention": probe.retention,
            "wiki_cosine": wiki.mean().item(),
            "wiki_worst": wiki.min().item(),
            "calib_cosine": calib.mean().item(),
            "calib_worst": calib.min().item(),
        }


def compress_row(source: Path, calibration, settings: dict, out: Path, export: bool):
    """Quantize and save one compress row (and export it to ONNX as `--export onnx` does, checked
    against torch); returns the folder, the per-layer alphas and the seconds it took."""
    from compress.onnx.integer import export_quantized_folder

    started = time.perf_counter()
    artifact = cz.quantize(source, "int8", activations="static", data=calibration, **settings)
    shutil.rmtree(out, ignore_errors=True)
    artifact.save(out)
    if export:
        export_quantized_folder(out, form="qoperator")
    alphas = {k.removesuffix(".weight"): v.get("smooth_alpha") for k, v in artifact.changes.items()}
    return out, alphas, time.perf_counter() - started


def nncf_row(source: Path, calibration, out: Path) -> tuple[Path, float]:
    started = time.perf_counter()
    shutil.rmtree(out, ignore_errors=True)
    cz.compress_checkpoint(source, cz.Quantize(scheme="int8", backend="nncf"), out, data=calibration)
    return out / "model.onnx", time.perf_counter() - started


def ort(path: Path):
    from compress.onnx.module import OrtModule

    return OrtModule(path, threads=2)


def sensitivity(folder: Path, scorer: Scorer) -> list[dict]:
    """Wiki cosine with one layer input static-quantized at a time (others float, weights int8)."""
    from compress.qmodules import QuantLinear

    module = cz.load(folder).module
    layers = {n: m for n, m in module.named_modules() if isinstance(m, QuantLinear)}
    layers.pop("pooler.dense", None)  # not on the path to last_hidden_state
    inputs: dict[bytes, list[str]] = {}  # readers of one tensor share one range
    for name, layer in layers.items():
        key = (name.rsplit(".", 2)[0] if ".attention.self." in name else name).encode()
        inputs.setdefault(key, []).append(name)
        layer.activations = "none"
    cosine = scorer.wiki_cosine(module, SENSITIVITY).mean().item()
    rows = [{"input of": "none (weights only)", "wiki_cosine": cosine}]
    for names in inputs.values():
        for n in names:
            layers[n].activations = "static"
        cosine = scorer.wiki_cosine(module, SENSITIVITY).mean().item()
        readers = ", ".join(n.rsplit(".", 1)[-1] for n in names)
        rows.append({"input of": f"{names[0].rsplit('.', 1)[0]}: {readers}", "wiki_cosine": cosine})
        for n in names:
            layers[n].activations = "none"
    return rows


def run(args) -> dict:
    from compress.calibration import Calibration, draw

    environment = {"cpu": cpu(), "torch_threads": None}
    import torch

    environment["torch_threads"] = torch.get_num_threads()
    source = minilm_path()
    base = cz.load(source)
    calibration = draw(Calibration(samples=args.samples, seq_len=args.seq_len, seed=0), base.tokenizer)
    scorer = Scorer(base, calibration, args.limit)
    out = WORK / "int8_static_accuracy"
    rows, alphas = [], {}
    nncf_graph, seconds = nncf_row(source, calibration, out / "nncf")
    row = {"row": "nncf static (same samples)", "runtime": "onnxruntime", "seconds": seconds}
    rows.append(row | scorer.score(ort(nncf_graph)))
    print(rows[-1], flush=True)
    folders = {}
    for name, settings in ROWS:
        folder = out / name.split(" (")[0].replace(" ", "_").replace(",", "").replace("+", "and")
        folder, alphas[name], seconds = compress_row(source, calibration, settings, folder, name == DEFAULT)
        folders[name] = folder
        graphs = [("torch", folder), ("onnxruntime", folder)] if name == DEFAULT else [("torch", folder)]
        for runtime, where in graphs:
            module = cz.load(where).module if runtime == "torch" else ort(where / "model.onnx")
            row = {"row": name, "runtime": runtime, "seconds": seconds}
            rows.append(row | scorer.score(module))
            print(rows[-1], flush=True)
    sensitive = {DEFAULT: sensitivity(folders[DEFAULT], scorer)} if args.sensitivity else {}
    return {
        "environment": environment,
        "calibration": {
            "source": calibration.source,
            "samples": len(calibration),
            "seq_len": calibration.seq_len,
            "seed": calibration.seed,
        },
        "rows": rows,
        "alphas": alphas,
        "sensitivity": sensitive,
    }


def render(data: dict) -> str:
    env = data["environment"]["cpu"]
    c = data["calibration"]
    head = "# Static INT8 accuracy on MiniLM: compress vs NNCF, same calibration\n\n"
    text = head + (__doc__ or "").split("\n\n", 2)[2] + "\n"
    text += (
        f"CPU: {env['model']}, {env['cores']} cores, flags {', '.join(env['flags']) or 'none of interest'}; "
        f"load average at the start {env['load_average']} (a shared machine: the seconds are indicative "
        f"only). Calibration: {c['source']}, {c['samples']} x {c['seq_len']} tokens, seed {c['seed']}.\n\n"
    )
    keys = ["row", "runtime", "spam_cosine", "spam_worst", "probe_retention", "wiki_cosine", "wiki_worst"]
    keys += ["calib_cosine", "calib_worst", "seconds"]
    text += markdown_table(keys, [[r.get(k) for k in keys] for r in data["rows"]])
    text += "\nSmoothing strength per layer input (alpha; q, k and v share one):\n\n"
    names = list(data["alphas"])
    layers = sorted({layer for a in data["alphas"].values() for layer in a if a[layer] is not None})
    shown = [layer for layer in layers if not layer.endswith((".key", ".value"))]
    table = [[layer] + [data["alphas"][n].get(layer) for n in names] for layer in shown]
    text += markdown_table(["layer", *names], table)
    for name, rows in data["sensitivity"].items():
        text += f"\nSensitivity of {name}: wiki cosine with only this input quantized:\n\n"
        text += markdown_table(["input of", "wiki cosine"], [[r["input of"], r["wiki_cosine"]] for r in rows])
    return text


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=128, help="calibration samples (default: compress's)")
    parser.add_argument("--seq-len", type=int, default=512, help="tokens per sample (default: compress's)")
    parser.add_argument("--limit", type=int, default=LIMIT, help="spam emails and wiki paragraphs scored")
    parser.add_argument("--sensitivity", action="store_true", help="also score one layer input at a time")
    parser.add_argument("--quick", action="store_true", help="print the results, do not write them")
    args = parser.parse_args()
    data = run(args)
    if args.quick:
        print(render(data))
        print(json.dumps(data, indent=1, default=str))
        return
    write_results("int8_static_accuracy", render(data), data)


if __name__ == "__main__":
    main()
