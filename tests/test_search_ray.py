"""compress search on Ray: against a head started here with `ray start --head` (--address), with a
worker killed in the middle of a trial, and interrupted then resumed. Tiny model, tiny budgets.

The head is stopped by terminating the `ray start --head --block` process this module started (it
stops the processes it started), not by `ray stop`, which stops every Ray process on the machine,
other users' clusters included."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from compress.cli import main
from compress.search.setup import default_runtime
from tests.test_search_space import write_space

pytest.importorskip("ray")
pytest.importorskip("optuna")

QUICK = ["--task", "classification", "--data", "spam", "--limit", "8", "--batch-size", "2", "--seq-len", "16"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Ray reads its authentication mode when it is imported, so the head here runs without token
# authentication (it listens on 127.0.0.1 only, for the length of this module).
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}


def _ray_env() -> dict[str, str]:
    return {**os.environ, **RAY_ENV}


@pytest.fixture(scope="module")
def ray_head():
    """A Ray head on 127.0.0.1 (`ray start --head`) and its address; stopped afterwards."""
    ray = shutil.which("ray") or str(Path(sys.executable).with_name("ray"))
    port = _free_port()
    temp = tempfile.mkdtemp(prefix="czt-ray-", dir="/tmp")  # short: Ray's socket paths are limited
    log = open(Path(temp) / "head.log", "w")  # noqa: SIM115 (open for the head's lifetime)
    head = subprocess.Popen(
        [ray, "start", "--head", "--block", f"--port={port}", "--node-ip-address=127.0.0.1", "--num-cpus=2",
         "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp}"],
        env=_ray_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while "Ray runtime started" not in (Path(temp) / "head.log").read_text():
            assert head.poll() is None and time.monotonic() < deadline, (Path(temp) / "head.log").read_text()
            time.sleep(0.5)
        yield f"127.0.0.1:{port}"
    finally:
        head.terminate()  # `ray start --block` stops the processes it started
        try:
            head.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


def _events(folder: Path) -> list[dict]:
    path = folder / "trials.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.is_file() else []


def _wait_for(folder: Path, event: str, proc: subprocess.Popen, timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [e for e in _events(folder) if e["event"] == event]
        if found:
            return found[0]
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        time.sleep(0.2)
    raise AssertionError(f"no '{event}' event within {timeout} s: {_events(folder)}")


def _wait_until(condition, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.05)


def _ray_folders(pid: int) -> set[Path]:
    """The /tmp/cz-ray-* folders named on the command lines of the processes under `pid` (its Ray)."""
    import psutil

    found = set()
    for child in psutil.Process(pid).children(recursive=True):
        try:
            found |= set(re.findall(r"/tmp/cz-ray-[A-Za-z0-9_]+", " ".join(child.cmdline())))
        except psutil.Error:  # a process that ended meanwhile
            continue
    return {Path(f) for f in found}


def _command(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from compress.cli import main; sys.exit(main())", *args]


def test_a_search_on_a_ray_head_started_with_ray_start(ray_head, tmp_path, tiny_bert):
    address = ray_head
    space, out = write_space(tmp_path), tmp_path / "out"
    args = [
        "search",
        str(tiny_bert),
        "-o",
        str(out),
        "--space",
        str(space),
        "--trials",
        "3",
        "--address",
        address,
    ]
    args += [*QUICK, "--budget", "0.3", "--pick", "size", "--min-speedup", "0.01", "--min-retention", "0.9"]
    result = CliRunner().invoke(main, args, terminal_width=200)
    assert result.exit_code == 0, result.output
    events = _events(out)
    assert events[0]["event"] == "session" and events[0]["ray"] == address
    starts = [e for e in events if e["event"] == "start"]
    assert starts[0]["name"] == "seed-int8"  # the seed recipe is the first trial
    assert len({e["trial"] for e in events if e["event"] in ("done", "failed")}) == 3
    front = json.loads((out / "front.json").read_text())
    # timed on the runtime compress recommends for this CPU, as --target auto (no --runtime given)
    assert front["schema"] == "compress.search/1" and front["latency"] == f"cpu/{default_runtime()}"
    assert front["front"] and all(r["keeps_floor"] for r in front["front"])
    assert (out / "pareto.png").read_bytes().startswith(b"\x89PNG")
    from compress.history import History

    rows = History(os.environ["COMPRESS_HISTORY"]).runs()
    assert sum(r.command == "search" for r in rows) == len(front["trials"]) + 1  # each trial, and the pick
    # The pick: its model, report and a recipe with gate rules; `compress run` reproduces it, gate passes.
    pick = json.loads((out / "pick" / "report.json").read_text())
    chosen = min(
        (r for r in front["trials"] if r["keeps_floor"]), key=lambda r: (r["size_ratio"], -r["retention"])
    )
    # the same weights; the header records the recipe, whose name and gate differ by a few bytes
    assert pick["size"]["ratio"] == pytest.approx(chosen["size_ratio"], rel=1e-3)
    assert pick["accuracy"]["retention"] == pytest.approx(chosen["retention"], abs=1e-9)
    again_args = ["run", str(out / "pick" / "recipe.yaml"), str(tiny_bert), "-o", str(tmp_path / "again")]
    rerun = CliRunner().invoke(
        main, [*again_args, "--json", str(tmp_path / "again.json"), "-q", "--no-cache"]
    )
    assert rerun.exit_code == 0, rerun.output
    again = json.loads((tmp_path / "again.json").read_text())
    assert again["size"]["ratio"] == pytest.approx(pick["size"]["ratio"], abs=1e-12)
    assert again["accuracy"]["retention"] == pytest.approx(pick["accuracy"]["retention"], abs=1e-9)


def test_a_killed_worker_does_not_stop_the_search(ray_head, tmp_path, tiny_bert):
    address = ray_head
    space, out = write_space(tmp_path), tmp_path / "out"
    args = [
        "search",
        str(tiny_bert),
        "-o",
        str(out),
        "--space",
        str(space),
        "--trials",
        "1",
        "--workers",
        "1",
    ]
    args += ["--address", address, *QUICK, "--budget", "2", "-q"]  # a trial long enough to kill it
    scratch = Path(tempfile.gettempdir()) / "compress-search"  # where the trials write their models
    before = set(scratch.glob("*")) if scratch.is_dir() else set()
    proc = subprocess.Popen(
        _command(*args), env=_ray_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    start = _wait_for(out, "start", proc)
    _wait_until(lambda: any(p not in before for p in scratch.glob("*/trial-*")), "the trial's folder")
    os.kill(start["pid"], signal.SIGKILL)  # the worker process running trial 0, killed mid-trial
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-3000:]
    assert set(scratch.glob("*")) <= before  # the killed trial's files were removed with the search
    events = [e for e in _events(out) if e.get("trial") == start["trial"]]
    kinds = [e["event"] for e in events]
    assert "worker died" in kinds, events
    retried = [e for e in events if e["event"] == "start" and e["attempt"] == 2]
    ended = [e for e in events if e["event"] in ("done", "failed")]
    assert len(ended) == 1 and (retried or ended[0]["event"] == "failed"), events
    if retried:  # the restarted worker is another process
        assert retried[0]["pid"] != start["pid"]
    front = json.loads((out / "front.json").read_text())
    assert sum(front["counts"].get(k, 0) for k in ("complete", "failed")) == 1


def test_an_interrupted_search_resumes_without_repeating_trials(ray_head, tmp_path, tiny_bert):
    address = ray_head
    space, out = write_space(tmp_path), tmp_path / "out"
    args = [
        "search",
        str(tiny_bert),
        "-o",
        str(out),
        "--space",
        str(space),
        "--trials",
        "3",
        "--workers",
        "1",
    ]
    args += [*QUICK, "--budget", "1"]
    # the first part starts its own local Ray instance (no --address)
    proc = subprocess.Popen(
        _command(*args, "-q"), env=_ray_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    first = _wait_for(out, "done", proc)
    ours = _ray_folders(proc.pid)  # its Ray's folder (other searches on the machine have their own)
    assert ours
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-3000:]
    assert "--resume" in stderr
    assert not any(folder.exists() for folder in ours)  # its Ray was shut down and its folder removed
    done_before = {e["trial"] for e in _events(out) if e["event"] in ("done", "failed")}
    assert first["trial"] in done_before and len(done_before) < 3
    result = CliRunner().invoke(main, [*args, "--resume", "--address", address, "-q"])
    assert result.exit_code == 0, result.output
    events = _events(out)
    resumed = events[max(i for i, e in enumerate(events) if e["event"] == "session") :]
    assert not {e["trial"] for e in resumed if e["event"] == "start"} & done_before  # none redone
    front = json.loads((out / "front.json").read_text())
    counts = front["counts"]
    assert counts.get("complete", 0) + counts.get("failed", 0) == 3, counts
    interrupted = [e["trial"] for e in events if e["event"] == "interrupted"]
    assert counts.get("interrupted", 0) == len(interrupted)


TWO_POINTS = """\
version: 1
name: two
quantize:
  embeddings: [float, same]
  variants:
    int8: {scheme: int8}
"""


def test_a_recipe_already_measured_is_not_run_again(ray_head, tmp_path, tiny_bert):
    """A space of two recipes and a budget of four trials: both run once, every further point the
    sampler proposes is told the earlier values without running, and the search stops when it keeps
    proposing measured recipes (it does not loop for ever)."""
    space, out = tmp_path / "space.yaml", tmp_path / "out"
    space.write_text(TWO_POINTS)
    args = ["search", str(tiny_bert), "-o", str(out), "--space", str(space), "--trials", "4"]
    args += ["--workers", "1", "--address", ray_head, *QUICK, "--budget", "0.3", "--min-retention", "0.5"]
    result = CliRunner().invoke(main, args, terminal_width=200)
    assert result.exit_code == 0, result.output
    events = _events(out)
    starts = [e for e in events if e["event"] == "start"]
    assert len(starts) == 2  # each recipe ran once
    repeats = [e for e in events if e["event"] == "duplicate"]
    assert repeats and {e["of"] for e in repeats} <= {e["trial"] for e in starts}
    assert "not run again" in result.output
    assert any(e["event"] == "exhausted" for e in events)
    front = json.loads((out / "front.json").read_text())
    assert front["counts"]["complete"] == 2 and front["counts"]["duplicate"] == len(repeats)
    assert len(front["trials"]) == 2  # the tables hold each measured recipe once
    assert "stopped before its budget" in (out / "front.md").read_text()
    from compress.search.study import finished, open_study

    assert finished(open_study(out, "both", 0, create=False)) == 2  # repeats count against no budget
