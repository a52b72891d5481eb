"""`compress run`: a recipe's passes, evaluation and gate; the dry run; cached steps reused after a
failed later step; checks up front; a deliberately bad candidate failing the gate with exit code 1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from compress.api import run_recipe
from compress.checkpoint import SafetensorsFile
from compress.cli import main
from compress.plan import plan_run
from compress.recipe import Recipe
from compress.writer import RECIPE_FILE
from tests import fake_passes
from tests.conftest import file_digest

FAST_EVAL = """
evaluate:
  limit: 16
  devices: [cpu]
  latency: {batch_size: 2, seq_len: 16, budget_s: 0.3, min_rounds: 3}
"""


def write_recipe(folder: Path, passes: str, gate: str = "", name: str = "r", limit: int = 16) -> Path:
    path = folder / f"{name}.yaml"
    evaluation = FAST_EVAL.replace("limit: 16", f"limit: {limit}")
    path.write_text(f"version: 1\npasses:\n{passes}{evaluation}" + (f"gate:\n{gate}" if gate else ""))
    return path


def run(*args: str):
    return CliRunner().invoke(main, ["run", *args], catch_exceptions=False)


INT8 = "  - {kind: quantize, scheme: int8, targets: {types: [linear, embedding]}}\n"
GATE = "  - {metric: accuracy.retention, min: 0.9}\n  - {metric: size.ratio, max: 0.5}\n"


def test_run_writes_the_model_the_resolved_recipe_and_a_passing_verdict(tiny_bert, tmp_path):
    recipe = write_recipe(tmp_path, INT8, GATE)
    before = file_digest(tiny_bert)
    out = tmp_path / "out"
    result = run(str(recipe), str(tiny_bert), "-o", str(out), "--json", str(tmp_path / "r.json"))
    assert result.exit_code == 0, result.output
    assert "gate passed: 2 of 2 checks passed" in result.stderr
    assert {p.name for p in out.iterdir()} >= {"model.safetensors", "config.json", RECIPE_FILE}
    assert Recipe.loads((out / RECIPE_FILE).read_text()) == Recipe.load(recipe)
    metadata = SafetensorsFile(out / "model.safetensors").metadata
    assert json.loads(metadata["compress.recipe"]) == Recipe.load(recipe).to_list()
    assert metadata["compress.source_sha256"] == before
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["schema"] == "compress.report/3" and report["size"]["ratio"] < 0.5
    assert file_digest(tiny_bert) == before  # the input is never modified


def test_dry_run_prints_the_plan_and_does_nothing(tiny_bert, tmp_path):
    recipe = write_recipe(tmp_path, INT8, GATE, name="tiny")
    result = run(str(recipe), str(tiny_bert), "--dry-run")
    assert result.exit_code == 0, result.output
    resolved = Recipe.loads(result.stdout)
    assert resolved == Recipe.load(recipe) and resolved.name == "tiny"
    assert "to run" in result.stderr and "int8 per-channel" in result.stderr
    assert "accuracy.retention min 0.9" in result.stderr
    assert not (tiny_bert.parent.parent / "bert-tiny").exists()
    assert not (tmp_path / "state").exists()  # no cache entry, no history row


def test_a_failed_later_step_reruns_without_redoing_the_earlier_ones(tiny_bert, tmp_path, monkeypatch):
    fake_passes.install(monkeypatch, fake_passes.SCALE)
    passes = (
        "  - {kind: quantize, scheme: int4, group_size: 32, targets: {types: [linear]}}\n"
        "  - {kind: quantize, scheme: int8, targets: {types: [embedding]}}\n"
    )
    recipe = Recipe.load(write_recipe(tmp_path, passes))
    first = run_recipe(recipe, tiny_bert, tmp_path / "a", evaluate=False)
    assert first.steps_run == [0, 1] and first.steps_reused == []
    metadata = SafetensorsFile(first.weights).metadata
    schemes = {v["scheme"] for v in json.loads(metadata["compress.tensors"]).values()}
    assert schemes == {"int4", "int8"} and len(json.loads(metadata["compress.recipe"])) == 2

    failing = Recipe.load(write_recipe(tmp_path, passes + "  - {kind: scale, factor: 2.0}\n"))
    monkeypatch.setenv(fake_passes.FAIL_ENV, "1")
    result = CliRunner().invoke(
        main, ["run", str(tmp_path / "r.yaml"), str(tiny_bert), "-o", str(tmp_path / "b")]
    )
    assert result.exit_code == 2 and "failing on purpose" in result.stderr
    assert not (tmp_path / "b").exists()
    monkeypatch.delenv(fake_passes.FAIL_ENV)
    second = run_recipe(failing, tiny_bert, tmp_path / "b", evaluate=False)
    assert second.steps_reused == [0, 1] and second.steps_run == [2]  # only the failed step ran again
    assert all(step.cached for step in plan_run(failing, tiny_bert, tmp_path / "c").steps)
    before = SafetensorsFile(first.weights)
    after = SafetensorsFile(second.weights)
    bias = "encoder.layer.0.attention.self.query.bias"
    assert (after.read(bias) == 2.0 * before.read(bias)).all()


def test_no_cache_keeps_nothing(tiny_bert, tmp_path):
    recipe = write_recipe(tmp_path, INT8)
    result = run(str(recipe), str(tiny_bert), "-o", str(tmp_path / "out"), "--no-cache", "-q")
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "state" / "cache").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".compress-steps")]


@pytest.mark.parametrize(
    ("passes", "expected"),
    [
        ("  - {kind: quantize, targets: {include: ['*nothing*']}}\n", "matches no linear layer"),
        ("  - {kind: quantize, sheme: int4}\n", "line 3: passes[0]: unknown setting 'sheme'"),
    ],
)
def test_bad_recipes_fail_before_any_work(tiny_bert, tmp_path, passes, expected):
    recipe = write_recipe(tmp_path, passes)
    result = run(str(recipe), str(tiny_bert), "-o", str(tmp_path / "out"))
    assert result.exit_code == 2 and expected in result.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "state" / "cache").exists()


def test_a_missing_data_file_is_refused_before_any_work(tiny_bert, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("passes:\n" + INT8 + "evaluate: {data: missing.jsonl}\n")
    result = run(str(recipe), str(tiny_bert), "-o", str(tmp_path / "out"))
    assert result.exit_code == 2 and "evaluate.data: missing.jsonl: no such file" in result.stderr
    assert not (tmp_path / "out").exists()


def test_pass_order_is_refused_before_any_work(tiny_bert, tmp_path, monkeypatch):
    fake_passes.install(monkeypatch, fake_passes.PRUNE)
    recipe = write_recipe(tmp_path, "  - {kind: quantize}\n  - {kind: prune}\n")
    result = run(str(recipe), str(tiny_bert), "-o", str(tmp_path / "out"))
    assert result.exit_code == 2 and "passes[1] (prune) comes after passes[0] (quantize)" in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_deliberately_bad_candidate_fails_the_gate_with_exit_code_1(tiny_bert, tmp_path):
    # INT4 round to nearest with one group per row: every targeted row is 64 wide.
    bad = (
        "  - {kind: quantize, scheme: int4, group_size: 64,\n"
        "     targets: {types: [linear, embedding], exclude: ['*layer.?.output.dense']}}\n"
    )
    recipe = write_recipe(tmp_path, bad, "  - {metric: accuracy.retention, min: 0.99}\n", limit=64)
    junit = tmp_path / "gate.xml"
    result = run(str(recipe), str(tiny_bert), "-o", str(tmp_path / "out"), "--junit", str(junit))
    assert result.exit_code == 1, result.output
    assert "gate failed: 1 of 1 checks failed: accuracy.retention is 0." in result.stderr
    assert "below the minimum 0.99" in result.stderr
    assert "<failure" in junit.read_text()
    assert (tmp_path / "out" / "model.safetensors").exists()  # the candidate is kept for inspection


def test_help_on_the_recipe_commands():
    for command in ("run", "gate", "history", "passes"):
        result = CliRunner().invoke(main, [command, "--help"])
        assert result.exit_code == 0 and "Usage" in result.output, command


def test_a_second_run_is_gated_against_the_first_accepted_one(tiny_bert, tmp_path):
    from compress.history import History

    gate = "  - {metric: size.ratio, max: 0.5}\n  - {metric: size.ratio, max_regression: 0.0}\n"
    recipe = write_recipe(tmp_path, INT8, gate)
    history = History(tmp_path / "h.db")
    first = run_recipe(recipe, tiny_bert, tmp_path / "one", history=history)
    assert first.verdict.passed and first.verdict.checks[1].status == "skip"
    second = run_recipe(recipe, tiny_bert, tmp_path / "two", history=history)
    assert second.steps_reused == [0] and second.previous.id == 1
    assert second.verdict.checks[1].status == "pass" and second.verdict.checks[1].previous is not None
    assert [r.gate_status for r in history.runs()] == ["pass", "pass"]
