"""Bad input on the command line: exit code 2, nothing on stdout, exactly one line on stderr naming the
file or setting at fault, and nothing written (README "Exit codes": "2 bad input or usage (one sentence
on stderr, nothing left behind)"; stdout carries data only).

stdout and stderr are read apart (click 8.2+ CliRunner keeps result.stderr separate; result.output
interleaves both). The terminal is made wide so that line wrapping cannot split the sentence."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import compress as cz
from compress.cli import main
from tests.conftest import file_digest

WIDE = 1000


def snapshot(root: Path) -> dict[str, str]:
    """Every file under root and its digest, except the history database: opening it (to fail early on
    a locked or corrupt one) may create it; that it holds no row is checked apart."""
    return {
        str(p.relative_to(root)): file_digest(p)
        for p in root.rglob("*")
        if p.is_file() and not p.name.startswith("history.db")
    }


def cases(tmp_path: Path, tiny_bert: Path) -> dict[str, tuple[list[str], list[str]]]:
    """name -> (arguments, what the line must name)."""
    pickle = tmp_path / "model.bin"
    torch.save({"w": torch.zeros(2)}, pickle)
    typo = tmp_path / "typo.yaml"
    typo.write_text("version: 1\npasses:\n  - {kind: quantize, sheme: int4}\n")
    out = str(tmp_path / "out")
    return {
        "missing file": (
            ["quantize", str(tmp_path / "absent.safetensors"), "-o", out],
            ["absent.safetensors"],
        ),
        "missing recipe": (
            ["run", str(tmp_path / "absent.yaml"), str(tiny_bert), "-o", out],
            ["absent.yaml"],
        ),
        "pickle file": (["quantize", str(pickle), "-o", out], ["model.bin", "pickle"]),
        "recipe typo": (["run", str(typo), str(tiny_bert), "-o", out], ["typo.yaml", "line 3", "sheme"]),
        "pattern matches nothing": (
            ["quantize", str(tiny_bert), "--include", "decoder.*", "-o", out, "--no-eval"],
            ["decoder.*", "matches no"],
        ),
        "value out of range": (
            ["prune", str(tiny_bert), "--sparsity", "1.5", "-o", out],
            ["sparsity", "1.5"],
        ),
        "unknown option value": (
            ["quantize", str(tiny_bert), "--scheme", "int3", "-o", out],
            ["--scheme", "int3"],
        ),
        "unknown option": (["quantize", str(tiny_bert), "--bits", "3", "-o", out], ["--bits"]),
    }


@pytest.mark.parametrize(
    "case",
    [
        "missing file",
        "missing recipe",
        "pickle file",
        "recipe typo",
        "pattern matches nothing",
        "value out of range",
        "unknown option value",
        "unknown option",
    ],
)
def test_bad_input_is_one_line_on_stderr_exit_2_nothing_on_stdout_nothing_written(tiny_bert, tmp_path, case):
    args, named = cases(tmp_path, tiny_bert)[case]
    before = snapshot(tmp_path)
    runner = CliRunner(env={"COLUMNS": str(WIDE)})
    result = runner.invoke(main, args, terminal_width=WIDE, catch_exceptions=False)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for name in named:
        assert name in lines[0], (name, lines[0])
    assert "Traceback" not in result.stderr
    assert snapshot(tmp_path) == before
    history = tmp_path / "state" / "history.db"  # COMPRESS_HISTORY in tests (conftest)
    assert not history.exists() or cz.History(history).models() == []
