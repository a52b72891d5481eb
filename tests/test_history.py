"""The results history: rows keyed by model and recipe, the last accepted run, versioned migrations,
two writer processes at once, and locked or corrupt databases refused without losing a row."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from compress.cli import main
from compress.errors import BadInput
from compress.gate import gate
from compress.history import MIGRATIONS, SCHEMA_VERSION, History, recipe_sha256
from tests.test_gate import make_report

MODEL = "a" * 64


def count_rows(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT count(*) FROM runs").fetchone()[0]


def test_append_and_read_back_keyed_by_model_and_recipe(tmp_path):
    history = History(tmp_path / "h" / "history.db")
    assert history.runs() == [] and not history.path.exists()  # reading creates nothing
    report = make_report()
    first = history.append(report, command="quantize")
    other = make_report(source="b" * 64)
    history.append(other, command="eval")
    runs = history.runs(MODEL)
    assert [r.id for r in runs] == [first]
    assert runs[0].command == "quantize" and runs[0].gate_status is None
    assert runs[0].recipe_sha256 == recipe_sha256(report)
    assert runs[0].load_report().metric("accuracy.retention") == report.metric("accuracy.retention")
    assert {m[0] for m in history.models()} == {MODEL, "b" * 64}


def test_last_accepted_is_the_latest_run_that_passed_its_gate(tmp_path):
    history = History(tmp_path / "history.db")
    rules = [{"metric": "accuracy.retention", "min": 0.99}]
    good, bad = make_report(retention=0.995), make_report(retention=0.95)
    history.append(good, command="run", verdict=gate(good, rules))
    history.append(bad, command="run", verdict=gate(bad, rules))
    history.append(make_report(retention=0.999), command="quantize")  # no gate: not accepted
    last = history.last_accepted(MODEL, recipe_sha256(good))
    assert last is not None and last.report["accuracy"]["retention"] == 0.995
    assert last.verdict["passed"] is True
    assert history.last_accepted(MODEL, "f" * 64) is None
    # a later gate on the failed report turns it into the last accepted run
    history.record_verdict(bad, gate(bad, [{"metric": "accuracy.retention", "min": 0.9}]))
    assert history.last_accepted(MODEL, recipe_sha256(good)).report["accuracy"]["retention"] == 0.95
    assert len(history.runs()) == 3


def test_an_old_database_is_migrated_and_keeps_its_rows(tmp_path):
    path = tmp_path / "history.db"
    with sqlite3.connect(path) as db:  # a database written by the first schema version
        db.executescript(MIGRATIONS[0])
        db.execute(
            "INSERT INTO runs (command, model_sha256, recipe_sha256, report_sha256, tool_version, report) "
            "VALUES ('eval', ?, 'r', 'x', '0.0.1', ?)",
            (MODEL, make_report().to_json()),
        )
        db.execute("PRAGMA user_version = 1")
    history = History(path)
    runs = history.runs(MODEL)
    assert len(runs) == 1 and runs[0].gate_status is None and runs[0].command == "eval"
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    history.append(
        make_report(), command="run", verdict=gate(make_report(), [{"metric": "size.ratio", "max": 1}])
    )
    assert [r.gate_status for r in history.runs(MODEL)] == [None, "pass"]


def test_newer_foreign_and_corrupt_databases_are_refused_and_left_alone(tmp_path):
    newer = tmp_path / "newer.db"
    with sqlite3.connect(newer) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    before = newer.read_bytes()
    with pytest.raises(BadInput, match="written by a newer compress"):
        History(newer).append(make_report(), command="eval")
    assert newer.read_bytes() == before  # "nothing was changed": not even the journal mode
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as db:
        db.execute("CREATE TABLE things (x)")
    before = foreign.read_bytes()
    for use in (lambda h: h.runs(), lambda h: h.append(make_report(), command="eval"), History.check):
        with pytest.raises(BadInput, match="is an SQLite database but not a compress history; left as is"):
            use(History(foreign))
    assert foreign.read_bytes() == before  # "left as is": not switched to WAL mode
    with sqlite3.connect(foreign) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["foreign.db", "newer.db"]  # no -wal, -shm
    corrupt = tmp_path / "corrupt.db"
    garbage = b"this is not a database" * 100
    corrupt.write_bytes(garbage)
    with pytest.raises(BadInput, match="is not a readable compress history database"):
        History(corrupt).append(make_report(), command="eval")
    assert corrupt.read_bytes() == garbage


def test_a_locked_database_is_refused_without_a_half_written_row(tmp_path):
    path = tmp_path / "history.db"
    history = History(path, timeout=0.2)
    history.append(make_report(), command="eval")
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        with pytest.raises(BadInput, match="locked by another process"):
            history.append(make_report(retention=0.5), command="eval")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert count_rows(path) == 1
    history.append(make_report(), command="eval")
    assert count_rows(path) == 2


WRITER = textwrap.dedent(
    """
    import pathlib, sys, time
    from compress.history import History
    from tests.test_gate import make_report
    history = History(sys.argv[1])
    folder = pathlib.Path(sys.argv[1]).parent
    (folder / f"ready-{sys.argv[2]}").touch()
    while not (folder / "go").exists():  # start together, so the writes really overlap
        time.sleep(0.01)
    for i in range(int(sys.argv[3])):
        history.append(make_report(retention=0.9 + i / 1000, name=sys.argv[2]), command=sys.argv[2])
    """
)


def test_two_concurrent_writer_processes_lose_no_row(tmp_path):
    path = tmp_path / "history.db"
    History(path).check()  # created once, so both writers start on the same schema
    n = 60
    root = Path(__file__).resolve().parent.parent
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(path), name, str(n)], cwd=root)
        for name in ("writer-a", "writer-b")
    ]
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"ready-{w}").exists() for w in ("writer-a", "writer-b")):
        assert time.monotonic() < deadline and all(w.poll() is None for w in writers)
        time.sleep(0.05)
    (tmp_path / "go").touch()
    assert [w.wait(timeout=120) for w in writers] == [0, 0]
    runs = History(path).runs()
    assert len(runs) == 2 * n and len({r.id for r in runs}) == 2 * n
    for name in ("writer-a", "writer-b"):
        mine = [r for r in runs if r.command == name]
        assert [r.report["accuracy"]["retention"] for r in mine] == [0.9 + i / 1000 for i in range(n)]


def test_history_command_prints_the_trend_and_draws_it(tmp_path, tiny_bert):
    env_history = Path(tmp_path / "state" / "history.db")
    runner = CliRunner()
    fast = [
        "--limit",
        "16",
        "--budget",
        "0.2",
        "--batch-size",
        "2",
        "--seq-len",
        "16",
        "--device",
        "cpu",
        "-q",
    ]
    for scheme, extra in (("int8", []), ("int4", ["--group-size", "32"])):
        out = tmp_path / scheme
        result = runner.invoke(
            main,
            ["quantize", str(tiny_bert), "--scheme", scheme, *extra, "-o", str(out), *fast],
        )
        assert result.exit_code == 0, result.output
    assert count_rows(env_history) == 2
    result = runner.invoke(
        main, ["history", str(tiny_bert), "--json", "-", "--plot", str(tmp_path / "t.png")]
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["command"] for r in rows] == ["quantize", "quantize"]
    assert rows[0]["size.ratio"] > rows[1]["size.ratio"] > 0
    assert len({r["recipe_sha256"] for r in rows}) == 2
    assert (tmp_path / "t.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = runner.invoke(main, ["history"])
    assert result.exit_code == 0 and "bert" in result.stderr
    result = runner.invoke(main, ["history", "feedbeef"])
    assert result.exit_code == 2 and "no model hash" in result.stderr


def test_commands_report_a_corrupt_history_with_exit_2(tmp_path, tiny_bert):
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"garbage" * 50)
    result = CliRunner().invoke(
        main, ["quantize", str(tiny_bert), "-o", str(tmp_path / "q"), "--history", str(bad), "-q"]
    )
    assert result.exit_code == 2 and "is not a readable compress history database" in result.stderr
    assert not (tmp_path / "q").exists()  # refused before any work
    result = CliRunner().invoke(main, ["history", str(tiny_bert), "--history", str(bad)])
    assert result.exit_code == 2
