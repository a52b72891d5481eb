"""`compress search` on the real MiniLM: the Pareto front against the shipped recipes, measured in the
same run, the pick re-run with `compress run`, and trials per minute on 1 and 2 workers.

    python benchmarks/search.py                    # writes benchmarks/results/search.{md,json}
    SEARCH_TRIALS=36 SEARCH_LIMIT=500 SEARCH_BUDGET_S=5 python benchmarks/search.py

1. The search: `compress search <MiniLM> --min-retention 0.99 --objective both` timed on the search's
   default runtime (the one compress recommends for this CPU; SEARCH_RUNTIME names another), with the
   default space (recipes/search/default.yaml), 2 workers, SEARCH_TRIALS trials; its first trials are
   the shipped recipes (the seeds), so they are measured in the same run, alike.
2. For every finished trial that keeps the floor: which shipped recipes it beats (equal or better
   retention, and smaller, or more than 5% faster on the same runtime), and whether one point beats them all.
3. The pick (SEARCH_PICK, under SEARCH_MIN_SPEEDUP) is run again by `compress run` on its recipe, in a
   fresh process: retention and size must reproduce and its gate must pass.
4. The seed trials alone on 1 worker (a second search), against the first as many trials of the
   2-worker search: trials per minute.

Every command runs in its own process, as a user would run it, with its own history and step cache
under benchmarks/work/search. The script does not take the benchmark lock unless SEARCH_LOCK=1 (a
search holds the machine for an hour or more); the load on the machine is sampled and reported.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from common import WORK, benchmark_lock, markdown_table, minilm_path, write_results

TRIALS = int(os.environ.get("SEARCH_TRIALS", "36"))
LIMIT = os.environ.get("SEARCH_LIMIT", "500")  # probe emails per split (fit, scored)
BUDGET_S = os.environ.get("SEARCH_BUDGET_S", "5")  # latency timing per trial and runtime, at most
PICK = os.environ.get("SEARCH_PICK", "size")
MIN_SPEEDUP = os.environ.get("SEARCH_MIN_SPEEDUP", "1.0")
RATE_TRIALS = int(os.environ.get("SEARCH_RATE_TRIALS", "6"))  # the first N seed trials, on 1 and 2 workers
# The space searched: the default one, or SEARCH_SPACE (benchmarks/search_space.yaml: without distillation).
SPACE = os.environ.get("SEARCH_SPACE", "")
RUNTIME = os.environ.get("SEARCH_RUNTIME", "")  # empty: the search's default for this CPU
SCRATCH = WORK / "search"


def cli(args: list[str], env: dict[str, str]) -> tuple[int, str, float]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", "import sys; from compress.cli import main; sys.exit(main())", *args],
        capture_output=True,
        text=True,
        env=env,
    )
    return done.returncode, done.stderr, time.perf_counter() - started


class Load:
    """The machine's 1-minute load average, sampled every 15 s while the benchmark runs."""

    def __init__(self):
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(os.getloadavg()[0])
            self._stop.wait(15)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def search_args(out: Path, trials: int, workers: int, pick: bool) -> list[str]:
    args = ["search", str(minilm_path()), "-o", str(out), "--min-retention", "0.99", "--objective", "both"]
    args += ["--runtime", RUNTIME] if RUNTIME else []
    args += ["--limit", LIMIT, "--budget", BUDGET_S]
    args += ["--trials", str(trials), "--workers", str(workers), "-q"]
    if SPACE:
        args += ["--space", str(Path(SPACE).resolve())]
    if pick:
        args += ["--pick", PICK, "--min-speedup", MIN_SPEEDUP]
    return args


def events(folder: Path) -> list[dict]:
    return [json.loads(x) for x in (folder / "trials.jsonl").read_text().splitlines() if x.strip()]


def rate(folder: Path, first: int) -> dict:
    """Trials per minute: the first `first` trials finished, from the session's start (Ray, workers and
    model loading included) and from the first trial's start (trials only)."""
    log = events(folder)
    session = _t(next(e for e in log if e["event"] == "session"))
    starts = [_t(e) for e in log if e["event"] == "start"]
    ends = sorted(_t(e) for e in log if e["event"] in ("done", "failed"))[:first]
    wall = ends[-1] - session
    return {
        "trials": len(ends),
        "wall_s": round(wall, 1),
        "per_minute": round(len(ends) / (wall / 60), 3),
        "per_minute_trials_only": round(len(ends) / ((ends[-1] - min(starts)) / 60), 3),
    }


def _t(event: dict) -> float:
    from datetime import datetime

    return datetime.fromisoformat(event["time"]).timestamp()


# A speedup beats another only when higher by more than this: one recipe timed twice in one run differs
# by a few percent (the pick in the search and re-run), so a smaller lead is noise, not a win.
SPEEDUP_MARGIN = 1.05


def beats(trials: list[dict], seeds: list[dict]) -> list[dict]:
    """For each trial that keeps the floor: the seeds it beats (retention >= the seed's, and a smaller
    size ratio or a speedup higher by more than SPEEDUP_MARGIN)."""
    out = []
    shipped = {s["passes"] for s in seeds}
    for t in trials:
        if not t["keeps_floor"] or t["seed"] or t["passes"] in shipped:  # a seed's recipe sampled again
            continue
        beaten = [
            s["name"]
            for s in seeds
            if t["retention"] >= s["retention"]
            and (t["size_ratio"] < s["size_ratio"] or faster(t["speedup"], s["speedup"]))
        ]
        out.append({**t, "beats": beaten, "beats_all": len(beaten) == len(seeds)})
    return out


def faster(speedup: float | None, than: float | None) -> bool:
    return (speedup or 0) > SPEEDUP_MARGIN * (than or 0)


RUNTIME_NAMES = {"openvino": "OpenVINO", "onnxruntime": "ONNX Runtime", "torch": "torch"}
SPEED_TEXT = {
    "onnxruntime": "ONNX Runtime on CPU, every trial exported to ONNX (model.onnx, as the shipped "
    "int8-dynamic recipe does)",
    "openvino": "OpenVINO on CPU, every trial's model converted by the evaluator (static INT8 as an integer "
    "graph with its float parts in bf16 where the CPU has BF16, bf16 models in bf16, weight-only models as "
    "their float export) against the float model in OpenVINO (f32)",
    "torch": "torch on CPU",
}


def render(data: dict) -> str:
    s = data["search"]
    runtime = s["latency"].split("/")[1]
    name = RUNTIME_NAMES.get(runtime, runtime)
    lines = [
        "# `compress search` on MiniLM: the Pareto front against the shipped recipes",
        "",
        "all-MiniLM-L6-v2 (float32, 90.9 MB). `compress search --min-retention 0.99 --objective both"
        f"{' --runtime ' + RUNTIME if RUNTIME else ''} --limit {LIMIT} --budget {BUDGET_S} --trials {TRIALS}"
        " --workers 2"
        f"{' --space ' + _shown(SPACE) if SPACE else ''}`, {_space_text()} then "
        "BF16, INT8 (weight-only, dynamic or static activations, SmoothQuant) or INT4 (rtn/mse/hqq/gptq/awq, "
        "groups 32/64/128), embeddings float/as the layers/INT8, 0/2/4/8 most sensitive layers kept at "
        "higher precision. The six shipped recipes are the first six trials (seeds), measured in the same "
        "run. Accuracy: spam linear probe fitted on the baseline's embeddings of "
        f"{LIMIT} emails, scored on up to {LIMIT} others (retention moves in steps of about 1/{LIMIT}). "
        f"Speed: {SPEED_TEXT.get(runtime, runtime)} (the search's runtime: "
        f"{'--runtime' if RUNTIME else 'its default, the one compress recommends for this CPU'}), batch "
        "8 x 128 tokens, baseline and candidate interleaved; each worker 1 thread.",
        "",
        f"Budget: {TRIALS} trials. Wall time {s['wall_s']:.0f} s ({s['wall_s'] / 60:.1f} min), "
        f"{data['rate']['2 workers, whole search']['per_minute']} trials per minute over the "
        f"{data['rate']['2 workers, whole search']['trials']} finished; "
        f"{', '.join(f'{n} {state}' for state, n in s['counts'].items())}.",
        "",
        f"**Machine**: {data['machine']}. Load average (1 min) during the run: "
        f"{data['load']['min']:.1f} to {data['load']['max']:.1f}, median {data['load']['median']:.1f}"
        + (
            ": other jobs shared the two cores, so times and speedups are indicative (speedups are per "
            "trial, baseline and candidate timed alternately, which survives load better than times)."
            if data["load"]["median"] > 2.5
            else " (the search's own two workers: no other job ran)."
        ),
        "",
        "## Pareto front (trials that keep 99%)",
        "",
        _front_table(s["front"], name),
        "## The shipped recipes (seed trials) and the trials that beat them",
        "",
        markdown_table(
            ["seed trial", "size ratio", "retention", f"speedup ({name})"],
            [[x["name"], x["size_ratio"], x["retention"], x["speedup"]] for x in data["seeds"]],
        ),
        "",
        f"A trial beats a recipe when it keeps the floor, its retention is equal or better, and it is "
        f"smaller, or faster by more than {SPEEDUP_MARGIN - 1:.0%} (a smaller lead is within the timing "
        "noise). Trials whose passes are a seed's are left out.",
        "",
        markdown_table(
            ["trial", "passes", "size ratio", "retention", "speedup", "beats", "beats every recipe"],
            [
                [
                    b["name"],
                    b["passes"],
                    b["size_ratio"],
                    b["retention"],
                    b["speedup"],
                    ", ".join(b["beats"]),
                    "yes" if b["beats_all"] else "",
                ]
                for b in sorted(data["beaters"], key=lambda b: (-len(b["beats"]), b["size_ratio"]))
            ],
        ),
        "",
        f"Points that beat every shipped recipe: {', '.join(data['beat_all']) or 'none'}.",
        "",
        _duplicates(s.get("duplicates") or []),
        "",
        "## The pick, run again with `compress run`",
        "",
        data["pick_md"],
        "## Trials per minute",
        "",
        markdown_table(
            [
                "workers",
                "trials",
                "wall s (Ray start and model load included)",
                "trials/min",
                "trials/min (trials only)",
            ],
            [
                [k, v["trials"], v["wall_s"], v["per_minute"], v["per_minute_trials_only"]]
                for k, v in data["rate"].items()
            ],
        ),
        "",
        f"The first {RATE_TRIALS} seed trials on 1 worker (a search of its own, with its own step cache) "
        f"and the first {RATE_TRIALS} trials to finish in the 2-worker search (two workers on two cores; "
        "see the load above).",
    ]
    if data["failed"]:
        lines += ["", "## Failed trials", "", *[f"- {f}" for f in data["failed"]]]
    return "\n".join(lines) + "\n"


def main() -> None:
    shutil.rmtree(SCRATCH, ignore_errors=True)
    SCRATCH.mkdir(parents=True)
    env = {
        **os.environ,
        "COMPRESS_HISTORY": str(SCRATCH / "history.db"),
        "COMPRESS_CACHE": str(SCRATCH / "cache"),
    }
    lock = benchmark_lock() if os.environ.get("SEARCH_LOCK") == "1" else _nothing()
    with lock, Load() as load:
        main_out = SCRATCH / "main"
        code, err, seconds = cli(search_args(main_out, TRIALS, 2, pick=True), env)
        print(f"search: exit {code} in {seconds:.0f} s\n{err[-2000:]}", flush=True)
        args = [
            "run",
            str(main_out / "pick" / "recipe.yaml"),
            str(minilm_path()),
            "-o",
            str(SCRATCH / "rerun"),
        ]
        rerun = cli([*args, "--json", str(SCRATCH / "rerun.json"), "-q", "--no-cache"], env)
        (SCRATCH / "rerun.log").write_text(f"{rerun[0]}\n{rerun[1]}")
        # Its own step cache: the 2-worker search's cached steps would make its trials look faster.
        alone = {**env, "COMPRESS_CACHE": str(SCRATCH / "cache-one-worker")}
        code, err, seconds = cli(search_args(SCRATCH / "one-worker", RATE_TRIALS, 1, pick=False), alone)
        print(f"1-worker search: exit {code} in {seconds:.0f} s\n{err[-2000:]}", flush=True)
    summarize(load.samples)


def summarize(samples: list[float]) -> None:
    """The results from the folders under SCRATCH (also alone: `python search.py --summarize LOADFILE`,
    for a run whose steps were stopped or run by hand; a step that did not finish is said so)."""
    import platform
    import statistics

    main_out, one = SCRATCH / "main", SCRATCH / "one-worker"
    front = json.loads((main_out / "front.json").read_text())
    seeds = [t for t in front["trials"] if t["seed"]]
    beaters = beats(front["trials"], seeds)
    picked = main_out / "pick" / "report.json"
    pick = json.loads(picked.read_text()) if picked.is_file() else None
    rerun_json, rerun_log = SCRATCH / "rerun.json", SCRATCH / "rerun.log"
    rerun = json.loads(rerun_json.read_text()) if rerun_json.is_file() else None
    code, _, err = rerun_log.read_text().partition("\n") if rerun_log.is_file() else ("not run", "", "")
    rates = {"1 worker": _rate(one, RATE_TRIALS), "2 workers": _rate(main_out, RATE_TRIALS)}
    rates["2 workers, whole search"] = _rate(main_out, 10**6)
    data = {
        "search": front | {"wall_s": front["wall_s"]},
        "seeds": seeds,
        "beaters": beaters,
        "beat_all": [b["name"] for b in beaters if b["beats_all"]],
        "pick_md": _pick_table(_picked_trial(main_out, front["trials"]), pick, rerun, code, err),
        "rate": rates,
        "load": {"min": min(samples), "max": max(samples), "median": statistics.median(samples)},
        "machine": f"{_cpu()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "failed": [f"#{f['trial']} {f['name']}: {f['error']}" for f in front["failed"]],
    }
    write_results("search", render(data), data)


def _rate(folder: Path, first: int) -> dict:
    """rate(), or the reason there is none (a search not run, or with no finished trial)."""
    try:
        return rate(folder, first)
    except (OSError, StopIteration, IndexError, ZeroDivisionError):
        return {"trials": 0, "wall_s": None, "per_minute": None, "per_minute_trials_only": None}


def _duplicates(rows: list[dict]) -> str:
    """The points the sampler proposed whose recipe an earlier trial had run: not run again."""
    if not rows:
        return "The sampler proposed no recipe twice."
    listed = ", ".join(f"#{r['trial']} (= #{r['of']})" for r in rows)
    return (
        f"Points proposed again (the recipe of an earlier trial; told its values, not run, not counted in "
        f"the budget): {len(rows)}: {listed}."
    )


def _shown(path: str) -> str:
    """A path as the reader would type it: relative to the repository when inside it."""
    full, root = Path(path).resolve(), Path(__file__).resolve().parents[1]
    return str(full.relative_to(root)) if full.is_relative_to(root) else path


def _space_text() -> str:
    if SPACE:
        return (
            f"space {_shown(SPACE)} (the default one without its distillation step): optionally prune "
            "(FFN neurons 10-30%, activation-aware)"
        )
    return (
        "default space (recipes/search/default.yaml): optionally prune (FFN neurons 10-50% or attention "
        "heads 25/50%, activation-aware) then optionally 30 steps of distillation from the original on "
        "wiki-train"
    )


def _front_table(rows: list[dict], runtime: str) -> str:
    return markdown_table(
        ["trial", "passes", "size MB", "size ratio", "retention", f"speedup ({runtime})"],
        [[r["name"], r["passes"], r["size_mb"], r["size_ratio"], r["retention"], r["speedup"]] for r in rows],
    )


def _picked_trial(folder: Path, trials: list[dict]) -> dict | None:
    """The trial the pick came from (its number is in the CI recipe's description)."""
    import re

    import yaml

    recipe = folder / "pick" / "recipe.yaml"
    if not recipe.is_file():
        return None
    text = yaml.safe_load(recipe.read_text()).get("description", "")
    found = re.search(r"trial (\d+)", text)
    return next((t for t in trials if found and t["trial"] == int(found[1])), None)


def _pick_table(trial: dict | None, pick: dict, rerun: dict | None, code: int, err: str) -> str:
    def row(label: str, r: dict | None) -> list[object]:
        if r is None:
            return [label, "", "", ""]
        speed = next((x.get("speedup") for x in r["latency"] if x.get("status") == "ok"), None)
        return [label, r["size"]["ratio"], r["accuracy"]["retention"], speed]

    rows = [
        [f"trial {trial['trial']} ({trial['name']}: {trial['passes']}) in the search", trial["size_ratio"],
         trial["retention"], trial["speedup"]] if trial else ["the trial", "", "", ""],
        row("the pick, re-run by `--pick` into DIR/pick", pick),
        row("`compress run DIR/pick/recipe.yaml` (fresh process)", rerun),
    ]  # fmt: skip
    table = markdown_table(["", "size ratio", "retention", "speedup"], rows)
    gate = err.strip().splitlines()[-1] if err.strip() else ""
    return table + f"\n`compress run` exit code {code}: {gate}\n"


def _cpu() -> str:
    """The CPU as compress detects it: model, ISA class and the flags its kernels use."""
    from compress.hardware import detect

    cpu = detect().cpu
    return f"{cpu.model} ({cpu.isa_class}; {', '.join(sorted(cpu.features))})"


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *_: object) -> None:
        return None


if __name__ == "__main__":
    if sys.argv[1:2] == ["--summarize"]:  # a file of load averages, one "time load" line every 15 s
        summarize([float(x.split()[1]) for x in Path(sys.argv[2]).read_text().splitlines() if x.strip()])
    else:
        main()
