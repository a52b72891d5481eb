"""Bad input that used to crash or be silently accepted: each gets one sentence and exit 2 (or works),
and leaves nothing behind. Crashes exit 3, never 1 (the gate's "failed")."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

import compress as cz
from compress.api import compress_checkpoint
from compress.checkpoint import SafetensorsFile, atomic_output_dir, save_tensors
from compress.cli import main
from compress.errors import BadInput
from compress.finite import check_finite
from compress.passes.quantize.datafree import quantize_int4_data_free
from compress.passes.quantize.rtn import quantize_int4, quantize_int8
from compress.recipe import Recipe
from compress.testing import correlated_inputs, tiny_norm_mlp


def run(*args: str, env: dict | None = None):
    return CliRunner(env=env).invoke(main, [str(a) for a in args], catch_exceptions=False)


def one_error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


# ---- tensors with a zero-size dimension ------------------------------------------------------------
def test_a_checkpoint_with_an_empty_tensor_quantizes_and_evaluates(tmp_path):
    src = tmp_path / "in" / "weights.safetensors"
    src.parent.mkdir()
    save_file({"empty.weight": torch.zeros(0, 16), "dense.weight": torch.randn(16, 16)}, str(src))
    out = tmp_path / "out"
    result = run("quantize", src, "-o", out, "--json", tmp_path / "r.json", "-q", "--device", "cpu")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert [t["name"] for t in report["tensors"]] == ["dense.weight"]  # nothing to quantize in it
    assert SafetensorsFile(out / "model.safetensors").read("empty.weight").shape == (0, 16)


# ---- NaN and Inf weights --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "encode",
    [
        lambda w, **kw: quantize_int8(w, **kw),
        lambda w, **kw: quantize_int4(w, 16, True, **kw),
        lambda w, **kw: quantize_int4_data_free(w, 16, False, "hqq", **kw),
    ],
)
def test_encoders_refuse_non_finite_weights_by_name_or_saturate_them_when_allowed(encode):
    w = torch.randn(4, 32)
    w[1, 3] = float("inf")
    w[2, 5] = float("nan")
    with pytest.raises(BadInput, match=r"weight 'blocks.0.fc.weight' holds 1 NaN and 1 infinite values"):
        encode(w, name="blocks.0.fc.weight")
    allowed = encode(w, name="blocks.0.fc.weight", allow_nonfinite=True).dequantize()
    assert torch.isfinite(allowed).all()
    finite_rows = [0, 3]
    assert torch.allclose(allowed[finite_rows], encode(w[finite_rows]).dequantize())
    # the row with the Inf keeps its other values: the Inf becomes the row's largest finite magnitude
    row = w[1].clone()
    row[3] = row[torch.isfinite(row)].abs().max()
    assert torch.nn.functional.cosine_similarity(allowed[1], row, dim=0) > 0.95


def test_check_finite_returns_the_tensor_itself_when_it_is_finite():
    w = torch.randn(3, 3)
    assert check_finite("w", w) is w


def test_cli_refuses_an_infinite_weight_and_writes_nothing(tmp_path):
    weights = {"a.weight": torch.randn(16, 16), "b.weight": torch.randn(16, 16)}
    weights["b.weight"][3, 4] = float("inf")
    src = tmp_path / "in" / "model.safetensors"
    src.parent.mkdir()
    save_file(weights, str(src))
    result = run("quantize", src, "-o", tmp_path / "out", "--no-eval")
    assert result.exit_code == 2
    line = one_error_line(result)
    assert "1 infinite value (first at [3, 4])" in line and "--allow-nonfinite" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "state"]  # state: conftest's history/cache
    assert not any((tmp_path / "state").rglob("*.safetensors"))


def test_data_aware_methods_refuse_non_finite_weights_before_calibrating():
    model = tiny_norm_mlp()
    with torch.no_grad():
        model[3].weight[0, 0] = float("nan")
    calibration = list(correlated_inputs(64, seed=1).split(32))
    with pytest.raises(BadInput, match=r"weight '3\.weight' holds 1 NaN value"):
        cz.quantize(model, "int4", group_size=16, method="gptq", data=calibration)


# ---- compressed checkpoints with edited metadata --------------------------------------------------
@pytest.fixture(scope="module")
def compressed(tmp_path_factory) -> dict[str, Path]:
    from compress.testing import write_tiny_bert

    root = tmp_path_factory.mktemp("compressed")
    src = write_tiny_bert(root / "bert")
    return {
        "src": src,
        "int8": compress_checkpoint(src, cz.Quantize(scheme="int8"), root / "int8").path,
        "int4": compress_checkpoint(src, cz.Quantize(scheme="int4", group_size=16), root / "int4").path,
    }


NAME = "encoder.layer.0.attention.output.dense.weight"


def _edited(compressed, scheme: str, dst: Path, meta=None, tensors=None, strip: bool = False) -> Path:
    """A copy of a compressed checkpoint with its compress.tensors entry or its stored parts edited."""
    shutil.copytree(compressed[scheme].parent, dst)
    file = SafetensorsFile(compressed[scheme])
    metadata, parts = dict(file.metadata), file.read_all()
    if strip:
        metadata = {k: v for k, v in metadata.items() if not k.startswith("compress.")}
    if meta:
        entries = json.loads(metadata["compress.tensors"])
        entries[NAME].update(meta)
        metadata["compress.tensors"] = json.dumps(entries)
    if tensors:
        tensors(parts)
    save_tensors(dst / "model.safetensors", parts, metadata)
    return dst / "model.safetensors"


EDITS = {
    "wrong shape": ("int8", {"shape": [16, 8]}, None, "values of encoded weight '.*' is int8 \\[64, 64\\]"),
    "group 0 on int8": ("int8", {"group_size": 0}, None, "says int8 with group_size 0"),
    "group 16 on int8": ("int8", {"group_size": 16}, None, "says int8 with group_size 16"),
    "int8 meta on int4 codes": (
        "int4",
        {"scheme": "int8", "group_size": None},
        None,
        "is uint8 \\[64, 32\\]",
    ),
    "int4 group that does not divide": ("int4", {"group_size": 48}, None, "does not divide its 64 columns"),
    "float dtype that is not": ("int8", {"dtype": "int64"}, None, "has dtype 'int64'"),
    "missing scale": ("int8", None, lambda t: t.pop(f"{NAME}_scale"), "lacks the stored parts"),
    "extra zero point": (
        "int8",
        None,
        lambda t: t.update({f"{NAME}_zero": torch.zeros(64, 2, dtype=torch.uint8)}),
        "does not use",
    ),
    "scale of another dtype": (
        "int8",
        None,
        lambda t: t.update({f"{NAME}_scale": t[f"{NAME}_scale"].half()}),
        "part '.*_scale' of encoded weight '.*' is float16 \\[64\\], but its metadata says float32",
    ),
}


@pytest.mark.parametrize("case", list(EDITS))
def test_edited_metadata_is_refused_on_load_naming_the_tensor(compressed, tmp_path, case):
    scheme, meta, tensors, message = EDITS[case]
    path = _edited(compressed, scheme, tmp_path / "edited", meta=meta, tensors=tensors)
    with pytest.raises(BadInput, match=message) as info:
        cz.load(path)
    assert NAME in str(info.value) and str(path) in str(info.value)
    result = run("eval", path.parent, "--baseline", compressed["src"], "-q", "--no-history")
    assert result.exit_code == 2 and NAME in one_error_line(result)


def test_codes_without_their_metadata_are_not_loaded_as_float_weights(compressed, tmp_path):
    path = _edited(compressed, "int8", tmp_path / "stripped", strip=True)
    with pytest.raises(BadInput, match=r"holds int8 values where BertModel has a float parameter.*missing"):
        cz.load(path)


# ---- exit codes -----------------------------------------------------------------------------------
@pytest.fixture
def a_report(tmp_path) -> Path:
    from tests.test_gate import make_report

    path = tmp_path / "report.json"
    path.write_text(make_report().to_json())
    return path


def test_an_internal_error_exits_3_with_one_line_and_a_hint(a_report, monkeypatch):
    import importlib

    def broken(*args, **kwargs):
        raise ZeroDivisionError("division by zero\nsecond line")

    monkeypatch.setattr(importlib.import_module("compress.gate"), "gate", broken)
    result = run("gate", a_report, "--min-retention", "0.5", "--no-history")
    assert result.exit_code == 3  # not 1: a crash must not read as "gate failed"
    line = one_error_line(result)
    assert line.startswith("internal error: ZeroDivisionError: division by zero (a bug in compress")
    assert "COMPRESS_DEBUG=1" in line
    debug = run("gate", a_report, "--min-retention", "0.5", "--no-history", env={"COMPRESS_DEBUG": "1"})
    assert debug.exit_code == 3 and "Traceback" in debug.stderr


def test_an_unwritable_output_is_exit_2_with_its_path(a_report, tmp_path, monkeypatch):
    import compress.report

    staged = tmp_path / "out" / ".model.safetensors.x1y2.partial"

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(staged))

    monkeypatch.setattr(compress.report.Report, "load", denied)
    result = run("gate", a_report, "--min-retention", "0.5", "--no-history")
    assert result.exit_code == 2
    assert (
        one_error_line(result)
        == f"error: cannot write to {tmp_path / 'out' / 'model.safetensors'}: permission denied."
    )


def test_atomic_outputs_in_an_unwritable_folder_are_one_sentence(tmp_path, monkeypatch):
    import tempfile

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(tempfile, "mkdtemp", denied)
    refused = pytest.raises(BadInput, match=f"cannot write to {tmp_path / 'out'}: permission denied")
    with refused, atomic_output_dir(tmp_path / "out"):
        pass
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_output_parent_is_exit_2(bare_checkpoint, tmp_path):
    parent = tmp_path / "ro"
    parent.mkdir(mode=0o555)
    result = run("quantize", bare_checkpoint, "-o", parent / "out", "--no-eval")
    assert result.exit_code == 2 and "permission denied" in one_error_line(result)


SLOW_WRITER = """
import sys, time
import compress.writer as writer

add = writer.CheckpointWriter.add

def slow(self, name, parts, meta):
    add(self, name, parts, meta)
    print("writing", flush=True)
    time.sleep(120)

writer.CheckpointWriter.add = slow
from compress.cli import main
main(["quantize", sys.argv[1], "-o", sys.argv[2], "--no-eval", "--no-cache", "-q"])
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_while_writing_cleans_up_as_ctrl_c_does(bare_checkpoint, tmp_path, signum):
    work = tmp_path / "work"
    work.mkdir()
    process = subprocess.Popen(
        [sys.executable, "-c", SLOW_WRITER, str(bare_checkpoint), str(work / "out")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout.readline().strip() == "writing"  # inside the staging folder now
        assert any(".partial" in p.name for p in work.iterdir())
        process.send_signal(signum)
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 128 + signum
    assert f"terminated ({signal.Signals(signum).name}): nothing partial was left behind" in err
    assert list(work.iterdir()) == []


# ---- output folders -------------------------------------------------------------------------------
HOLDER = """
import sys, time
from compress.outputs import output_lock

with output_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(120)
"""


def test_a_second_writer_of_one_output_is_refused_with_the_holders_pid(bare_checkpoint, tmp_path):
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        result = run("quantize", bare_checkpoint, "-o", out, "--no-eval")
        assert result.exit_code == 2
        assert f"is being written by another compress process (pid {holder.pid})" in one_error_line(result)
        assert not out.exists()
    finally:
        holder.kill()
        holder.wait()
    # the holder died without cleaning up: its lock file is left, and no longer holds anyone back
    result = run("quantize", bare_checkpoint, "-o", out, "--no-eval", "-q")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir() if "lock" in p.name) == []


def test_a_stale_file_in_an_output_folder_does_not_survive_a_new_run(bare_checkpoint, tmp_path):
    out = tmp_path / "out"
    assert run("quantize", bare_checkpoint, "-o", out, "--no-eval", "-q").exit_code == 0
    (out / "model.onnx").write_text("an old graph")
    assert (
        run(
            "quantize",
            bare_checkpoint,
            "-o",
            out,
            "--no-eval",
            "-q",
            "--scheme",
            "int4",
            "--group-size",
            "16",
        ).exit_code
        == 0
    )
    assert not (out / "model.onnx").exists()
    assert "int4" in SafetensorsFile(out / "model.safetensors").metadata["compress.recipe"]


def test_a_folder_compress_did_not_write_is_refused_not_emptied(bare_checkpoint, tmp_path):
    out = tmp_path / "project"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    result = run("quantize", bare_checkpoint, "-o", out, "--no-eval")
    assert result.exit_code == 2 and "holds files compress did not write (notes.txt)" in one_error_line(
        result
    )
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


@pytest.mark.parametrize(("umask", "file_mode", "dir_mode"), [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750)])
def test_outputs_get_the_users_umask(bare_checkpoint, tmp_path, umask, file_mode, dir_mode):
    previous = os.umask(umask)
    try:
        out, report = tmp_path / "out", tmp_path / "report.json"
        result = run("quantize", bare_checkpoint, "-o", out, "--json", report, "-q", "--device", "cpu")
    finally:
        os.umask(previous)
    assert result.exit_code == 0, result.output
    assert report.stat().st_mode & 0o777 == file_mode
    assert out.stat().st_mode & 0o777 == dir_mode
    assert (out / "model.safetensors").stat().st_mode & 0o777 == file_mode


def test_the_lock_and_the_format_key_agree_with_the_rest_of_compress():
    from compress.formats import KEY_FORMAT
    from compress.outputs import FORMAT_KEY

    assert FORMAT_KEY == KEY_FORMAT


# ---- YAML -----------------------------------------------------------------------------------------
def test_yaml_aliases_are_refused_before_they_can_expand():
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, 9):
        previous, name = chr(ord("a") + level - 1), chr(ord("a") + level)
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{previous}"] * 9) + "]")
    text = "passes: [{kind: quantize}]\n" + "\n".join(lines) + "\n"
    assert len(text) < 700  # a few hundred bytes that would expand to 9**9 nodes
    started = time.process_time()
    with pytest.raises(BadInput, match=r"r.yaml, line 2: YAML anchors and aliases \(&a\) are not accepted"):
        Recipe.loads(text, "r.yaml")
    assert time.process_time() - started < 5  # not a timing claim: only "it did not expand"
    with pytest.raises(BadInput, match=r"line 3: .*\(\*base\)"):
        Recipe.loads("passes:\n  - kind: quantize\n    targets: *base\n", "r.yaml")


# ---- configuration values -------------------------------------------------------------------------
def test_nan_and_inf_settings_are_refused_with_the_settings_name():
    with pytest.raises(BadInput, match=r"gate\[0\].min: expected a finite number, got nan"):
        Recipe.loads("passes: [{kind: quantize}]\ngate:\n  - {metric: size.ratio, min: .nan}\n")
    with pytest.raises(BadInput, match=r"latency.budget_s: expected a finite number, got inf"):
        cz.LatencySettings.from_dict({"budget_s": float("inf")})


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"batch_size": 100_000_000_000}, "batch_size must be between 1 and 65,536"),
        ({"batch_size": 0}, "batch_size must be between 1"),
        ({"seq_len": -4}, "seq_len must be between 1"),
        ({"batch_size": 4096, "seq_len": 8192}, "is more than the 16,777,216"),
        ({"min_rounds": 50, "max_rounds": 10}, "min_rounds 50 is above max_rounds 10"),
    ],
)
def test_absurd_latency_settings_are_refused(settings, message):
    with pytest.raises(BadInput, match=message):
        cz.LatencySettings(**settings)


def test_cli_latency_settings_are_checked(tiny_bert):
    result = run("eval", tiny_bert, "--baseline", tiny_bert, "--batch-size", "100000000000", "--no-history")
    assert result.exit_code == 2 and "batch_size must be between" in one_error_line(result)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--min", "size.ratio=0.99", "--max", "size.ratio=0.5"], "min 0.99 is above max 0.5"),
        (["--min", "size.ratio=nan"], "expected a finite number, got nan"),
        (["--min-retention", "nan"], "expected a finite number, got nan"),
        (["--min-retention", "0.9", "--against", "last", "--tolerance", "nan"], "--tolerance must be"),
    ],
)
def test_gate_refuses_contradictory_and_nan_bounds(a_report, options, message):
    result = run("gate", a_report, *options, "--no-history")
    assert result.exit_code == 2 and message in one_error_line(result)


def test_contradictory_rules_in_python_are_refused_too():
    from tests.test_gate import make_report

    rules = [{"metric": "size.ratio", "min": 0.4}, {"metric": "size.ratio", "max": 0.3}]
    with pytest.raises(BadInput, match="contradict each other"):
        cz.gate(make_report(), rules)


# ---- data -----------------------------------------------------------------------------------------
def test_a_csv_with_a_byte_order_mark_is_read(tmp_path):
    from compress.eval.data import load_labelled

    path = tmp_path / "excel.csv"
    rows = "".join(
        f"{'free cash now' if i % 2 else 'meeting at noon'} {i},{'spam' if i % 2 else 'ham'}\n"
        for i in range(20)
    )
    path.write_bytes("\ufefftext,label\n".encode() + rows.encode())
    data = load_labelled(path)
    assert data.label_names == ["ham", "spam"] and len(data.train_texts) + len(data.test_texts) == 20


def test_a_foreign_sqlite_history_is_left_as_is_by_the_cli(bare_checkpoint, tmp_path):
    foreign = tmp_path / "app.db"
    with sqlite3.connect(foreign) as db:
        db.execute("CREATE TABLE users (name)")
    before = foreign.read_bytes()
    result = run("quantize", bare_checkpoint, "-o", tmp_path / "o", "--history", foreign)
    assert result.exit_code == 2 and "left as is" in one_error_line(result)
    assert foreign.read_bytes() == before and not (tmp_path / "o").exists()
