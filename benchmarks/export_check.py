"""The compressed-tensors export on real models: plain transformers loads it on CPU and computes what
compress.load computes.

    python benchmarks/export_check.py            # writes benchmarks/results/export_check.{md,json}
    python benchmarks/export_check.py --quick    # MiniLM only

Rows (each: quantize with compress, export with the `compressed-tensors` exporter, load the export
with transformers and the compressed-tensors package, compare with compress.load of the checkpoint):
- MiniLM (all-MiniLM-L6-v2) INT8 weight-only (W8A16, pack-quantized) and INT8 with dynamic
  activations (W8A8, int-quantized), loaded with AutoModel: max abs difference of the token
  embeddings (last_hidden_state, padding excluded) on 32 texts of the built-in spam set. For dynamic
  activations also with compress's per-token rounding switched to compressed-tensors' (max|x| / 127.5
  in transformers' reference; compress and vLLM's kernel use max|x| / 127).
- Gemma-3-270M (its float32 weights are dequantized Q4_K_M from a GGUF), INT4 AWQ (symmetric, group
  128, 16 x 256 tokens of wiki-train), loaded with AutoModelForCausalLM: the first 32 greedy tokens
  after each of 4 prompts against compress.load's, and the max abs difference of the prompt logits.
Both: how many quantized layers transformers decompressed to exactly compress's weights, file sizes.
vLLM needs a GPU and is not run here. Times are indicative only (2 shared CPU cores, other jobs).
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import torch
from common import benchmark_lock, gemma_path, markdown_table, minilm_path, write_results

import compress as cz
from compress.exporters import export_config_from_dict, run_exports
from compress.qmodules import QuantLinear

CT = "compressed-tensors"
PROMPTS = [
    "The capital of France is",
    "In 1969, the first humans",
    "def fibonacci(n):",
    "The weather today is",
]


def quantize_and_export(source: Path, out: Path, **settings) -> dict:
    start = time.perf_counter()
    cz.quantize(source, **settings).save(out)
    quantized = time.perf_counter()
    run_exports(out, [export_config_from_dict({"format": CT})])
    return {
        "quantize_s": round(quantized - start, 1),
        "export_s": round(time.perf_counter() - quantized, 1),
        "compress_mb": round((out / "model.safetensors").stat().st_size / 1e6, 1),
        "export_mb": round((out / CT / "model.safetensors").stat().st_size / 1e6, 1),
    }


def same_weights(reference, exported) -> str:
    layers = [(n, m) for n, m in reference.named_modules() if isinstance(m, QuantLinear)]
    same = sum(
        torch.equal(m.qweight.dequantize(torch.float32), exported.get_submodule(n).weight.float())
        for n, m in layers
    )
    return f"{same}/{len(layers)}"


def ct_rounding(x: torch.Tensor) -> torch.Tensor:
    """compressed-tensors' dynamic per-token int8 rounding (calculate_qparams, symmetric)."""
    scale = x.abs().amax(dim=-1, keepdim=True) / 127.5
    return torch.round(torch.clamp(x / scale, -128, 127)) * scale


def minilm_row(label: str, root: Path, **settings) -> dict:
    from transformers import AutoModel, AutoTokenizer

    import compress.qmodules as qmodules
    from compress.eval.data import load_labelled

    out = root / label
    row = {"model": "all-MiniLM-L6-v2", "scheme": label}
    row.update(quantize_and_export(minilm_path(), out, **settings))
    texts = load_labelled("spam", limit=64).test_texts[:32]
    batch = AutoTokenizer.from_pretrained(out / CT)(texts, padding=True, truncation=True, return_tensors="pt")
    mask = batch["attention_mask"].bool()
    start = time.perf_counter()
    exported = AutoModel.from_pretrained(out / CT).eval()
    row["load_s"] = round(time.perf_counter() - start, 1)
    reference = cz.load(out).module
    with torch.no_grad():
        got = exported(**batch).last_hidden_state
        want = reference(**batch).last_hidden_state
        row["max_abs_diff"] = float((got - want).abs()[mask].max())
        row["min_token_cosine"] = float(torch.nn.functional.cosine_similarity(got, want, dim=-1)[mask].min())
        row["output_max_abs"] = float(got.abs()[mask].max())
        floats = AutoModel.from_pretrained(minilm_path().parent).eval()(**batch).last_hidden_state
        row["compress_vs_float_max_abs_diff"] = float((want - floats).abs()[mask].max())
        if settings.get("activations") == "dynamic":
            original, qmodules.per_token_fake_quant = qmodules.per_token_fake_quant, ct_rounding
            try:
                want = reference(**batch).last_hidden_state
            finally:
                qmodules.per_token_fake_quant = original
            row["max_abs_diff_ct_rounding"] = float((got - want).abs()[mask].max())
    row["same_weights"] = same_weights(reference, exported)
    return row


def gemma_row(root: Path, samples: int, seq_len: int) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = root / "gemma-int4-awq"
    settings = {"method": "awq", "data": "wiki-train", "calib": {"samples": samples, "seq_len": seq_len}}
    row = {"model": "Gemma-3-270M (dequantized Q4_K_M)", "scheme": f"int4 awq g128 sym ({samples}x{seq_len})"}
    row.update(quantize_and_export(gemma_path(), out, scheme="int4", group_size=128, **settings))
    start = time.perf_counter()
    exported = AutoModelForCausalLM.from_pretrained(out / CT).eval()
    row["load_s"] = round(time.perf_counter() - start, 1)
    reference = cz.load(out).module
    tokenizer = AutoTokenizer.from_pretrained(out / CT)
    agree, diffs = [], []
    for prompt in PROMPTS:
        ids = tokenizer(prompt, return_tensors="pt").input_ids
        with torch.no_grad():
            diffs.append(float((exported(ids).logits - reference(ids).logits).abs().max()))
        tokens = [
            m.generate(ids, max_new_tokens=32, min_new_tokens=32, do_sample=False)[0, ids.shape[1] :].tolist()
            for m in (exported, reference)
        ]
        agree.append(tokens[0] == tokens[1])
        print(f"  {prompt!r}: same 32 tokens {agree[-1]}: {tokenizer.decode(tokens[0])!r}", flush=True)
    row["same_32_greedy_tokens"] = f"{sum(agree)}/{len(agree)}"
    row["max_abs_diff"] = max(diffs)
    row["same_weights"] = same_weights(reference, exported)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="MiniLM only")
    args = parser.parse_args()
    import compressed_tensors
    import transformers

    rows = []
    with benchmark_lock(), tempfile.TemporaryDirectory(prefix="export-check-") as tmp:
        root = Path(tmp)
        rows.append(minilm_row("int8 (W8A16)", root, scheme="int8"))
        print(rows[-1], flush=True)
        rows.append(minilm_row("int8 dynamic (W8A8)", root, scheme="int8", activations="dynamic"))
        print(rows[-1], flush=True)
        if not args.quick:
            rows.append(gemma_row(root, samples=16, seq_len=256))
            print(rows[-1], flush=True)
    columns = [
        "model",
        "scheme",
        "same_weights",
        "max_abs_diff",
        "max_abs_diff_ct_rounding",
        "min_token_cosine",
        "compress_vs_float_max_abs_diff",
        "same_32_greedy_tokens",
        "compress_mb",
        "export_mb",
        "quantize_s",
        "export_s",
        "load_s",
    ]
    environment = {
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "compressed_tensors": compressed_tensors.__version__,
        "note": "2 CPU cores shared with other jobs: times are indicative only; vLLM (GPU) not run",
    }
    markdown = "# compressed-tensors export: transformers on CPU against compress.load\n\n"
    markdown += markdown_table(columns, [[row.get(c) for c in columns] for row in rows])
    markdown += (
        "\nsame_weights: quantized layers whose weight, as transformers decompressed it, equals "
        "compress's bit for bit. max_abs_diff: MiniLM token embeddings (padding excluded), Gemma prompt "
        "logits. max_abs_diff_ct_rounding: the same with compress's per-token rounding switched to "
        "compressed-tensors' (max|x| / 127.5; compress and vLLM's kernel use max|x| / 127). "
        "min_token_cosine: the least cosine between the two models' token embeddings. "
        "compress_vs_float_max_abs_diff: compress's quantized model against the float model, for scale. "
        "Gemma-3-270M's "
        "float32 weights are dequantized Q4_K_M. Environment: "
        + ", ".join(f"{k} {v}" for k, v in environment.items())
        + ".\n"
    )
    write_results("export_check", markdown, {"rows": rows, "environment": environment})


if __name__ == "__main__":
    main()
