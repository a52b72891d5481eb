"""Static INT8 accuracy on MiniLM: compress's static variants against NNCF's, on the same calibration.

    python benchmarks/int8_static_accuracy.py            # default calibration (wiki-train, 128 x 512)
    python benchmarks/int8_static_accuracy.py --samples 32 --seq-len 128 --quick   # a quicker check

Every row quantizes all-MiniLM-L6-v2 with static INT8 (per-tensor uint8 activation ranges and int8
per-channel weights) on one CalibrationData object, so all rows calibrate on exactly the same texts:
- compress rows: `compress.quantize(..., activations="static", data=calibration, ...)`, saved, then
  exported as `--export onnx` does (export_quantized_folder: the graph is checked against torch);
  each is scored through the torch module (which rounds exactly as the graph does) and through the
  ONNX graph in ONNX Runtime (QOperator MatMulIntegerToFloat, or the QDQ form);
- nncf: `compress quantize --backend nncf` (nncf.quantize, model type TRANSFORMER, embeddings left
  float) on the same samples, scored through ONNX Runtime (its graph is the only form it has).
Scores (all against the float torch model): sentence-embedding cosine (mean and worst) on 200 spam
test emails and the spam probe's accuracy retention (compress.evaluate's default task for an
encoder), on paragraphs of the wiki test half (held out: the calibration draws from wiki-train), and
on the calibration windows themselves. Sensitivity: with the default static model, one layer input
at a time quantized (every other input left in float; weights int8 everywhere), the wiki cosine
on the first 32 paragraphs.
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
# compress rows: (name, quantize settings); the default smoothing ("auto") is left unset.
BEFORE, DEFAULT = "compress smooth 0.5, w7 (before)", "compress auto, w7 (default)"
QDQ_OF = "compress auto, w8"
ROWS = [
    (BEFORE, {"smooth": 0.5}),
    ("compress smooth 0.5, w8", {"smooth": 0.5, "weight_bits": 8}),
    ("compress smooth 0.95, w8", {"smooth": 0.95, "weight_bits": 8}),
    (DEFAULT, {}),
    (QDQ_OF, {"weight_bits": 8}),  # also exported in the QDQ form (same checkpoint)
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


def compress_row(source: Path, calibration, settings: dict, out: Path) -> tuple[Path, dict, float]:
    """Quantize, save and export one compress row; returns the folder, the per-layer alphas, seconds."""
    from compress.onnx.integer import export_quantized_folder

    started = time.perf_counter()
    artifact = cz.quantize(source, "int8", activations="static", data=calibration, **settings)
    shutil.rmtree(out, ignore_errors=True)
    artifact.save(out)
    export_quantized_folder(out, form="qoperator")
    alphas = {k.removesuffix(".weight"): v.get("smooth_alpha") for k, v in artifact.changes.items()}
    return out, alphas, time.perf_counter() - started


def qdq_copy(folder: Path) -> Path:
    from compress.onnx.integer import export_quantized_folder

    twin = folder.with_name(folder.name + "-qdq")
    shutil.rmtree(twin, ignore_errors=True)
    shutil.copytree(folder, twin)
    (twin / "model.onnx").unlink()
    export_quantized_folder(twin, form="qdq")
    return twin


def nncf_row(source: Path, calibration, out: Path) -> tuple[Path, float]:
    from compress.api import quantize_config
    from compress.backends.nncf import compress_with_nncf

    started = time.perf_counter()
    shutil.rmtree(out, ignore_errors=True)
    compress_with_nncf(source, quantize_config("int8", backend="nncf"), out, data=calibration)
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
    from compress.calib import load_calibration

    environment = {"cpu": cpu(), "torch_threads": None}
    import torch

    environment["torch_threads"] = torch.get_num_threads()
    source = minilm_path()
    base = cz.load(source)
    calibration = load_calibration(
        "wiki-train", tokenizer=base.tokenizer, n_samples=args.samples, seq_len=args.seq_len, seed=0
    )
    scorer = Scorer(base, calibration, args.limit)
    out = WORK / "int8_static_accuracy"
    rows, alphas = [], {}
    nncf_graph, seconds = nncf_row(source, calibration, out / "nncf")
    row = {"row": "nncf static (same samples)", "runtime": "onnxruntime", "seconds": seconds}
    rows.append(row | scorer.score(ort(nncf_graph)))
    print(rows[-1], flush=True)
    folders = {}
    for name, settings in ROWS:
        if args.quick and name not in (BEFORE, DEFAULT, QDQ_OF):
            continue
        folder = out / name.replace(" ", "_").replace(",", "")
        folder, alphas[name], seconds = compress_row(source, calibration, settings, folder)
        folders[name] = folder
        graphs = [("torch", folder, None), ("onnxruntime", folder, "")]
        if name == QDQ_OF:
            graphs.append(("onnxruntime", qdq_copy(folder), " QDQ"))
        for runtime, where, suffix in graphs:
            module = cz.load(where).module if runtime == "torch" else ort(where / "model.onnx")
            row = {"row": name + (suffix or ""), "runtime": runtime, "seconds": seconds}
            rows.append(row | scorer.score(module))
            print(rows[-1], flush=True)
    sensitive = {name: sensitivity(folders[name], scorer) for name in (BEFORE, DEFAULT) if name in folders}
    return {
        "environment": environment,
        "calibration": calibration.describe(),
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
    parser.add_argument("--quick", action="store_true", help="three compress rows only; results not written")
    args = parser.parse_args()
    data = run(args)
    if args.quick:
        print(render(data))
        print(json.dumps(data, indent=1, default=str))
        return
    write_results("int8_static_accuracy", render(data), data)


if __name__ == "__main__":
    main()
