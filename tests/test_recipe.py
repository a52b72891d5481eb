"""Recipe files: strict validation whose messages name the file and line and list the valid choices;
pass-order checks before any work; the resolved recipe round-trips through YAML."""

from __future__ import annotations

from pathlib import Path

import pytest

from compress.errors import BadInput
from compress.recipe import Recipe
from tests import fake_passes

ROOT = Path(__file__).resolve().parent.parent


def error_of(text: str) -> str:
    with pytest.raises(BadInput) as info:
        Recipe.loads(text, "r.yaml")
    return str(info.value)


def test_a_full_recipe_loads_with_every_section():
    recipe = Recipe.loads(
        """
version: 1
name: int4-test
description: a test
passes:
  - kind: quantize
    scheme: int4
    group_size: 32
    targets: {types: [linear, embedding], exclude: ["*pooler*"]}
evaluate:
  task: classification
  limit: 16
  devices: [cpu]
  latency: {batch_size: 2, seq_len: 16, budget_s: 1}
gate:
  - {metric: accuracy.retention, min: 0.99}
  - {metric: size.ratio, max: 0.3, max_regression_pct: 1}
""",
        "r.yaml",
    )
    assert recipe.name == "int4-test"
    assert recipe.passes[0].group_size == 32 and recipe.passes[0].targets.exclude == ("*pooler*",)
    assert recipe.evaluation.devices == ("cpu",) and recipe.evaluation.latency.budget_s == 1.0
    assert recipe.evaluation.arguments()["limit"] == 16
    assert [r.metric for r in recipe.gate] == ["accuracy.retention", "size.ratio"]
    assert recipe.gate[1].compares_with_previous and not recipe.gate[0].compares_with_previous


def test_unknown_top_level_key_names_the_line_and_the_valid_keys():
    message = error_of("version: 1\npasses: [{kind: quantize}]\nevalute: {task: auto}\n")
    assert message.startswith("r.yaml, line 3: ")
    assert "unknown key 'evalute' (did you mean 'evaluate'?)" in message
    assert (
        "valid keys: version, name, description, model, passes, calibration, export, evaluate, gate"
        in message
    )


def test_unknown_pass_kind_lists_the_installed_passes():
    message = error_of("passes:\n  - kind: quantise\n    scheme: int8\n")
    assert message.startswith("r.yaml, line 2: ")
    assert "unknown pass kind 'quantise' (did you mean 'quantize'?)" in message
    assert "installed passes:" in message and "quantize" in message


def test_unknown_pass_setting_points_at_its_own_line():
    message = error_of("passes:\n  - kind: quantize\n    scheme: int4\n    grup_size: 32\n")
    assert message.startswith("r.yaml, line 4: passes[0]: unknown setting 'grup_size'")
    assert "did you mean 'group_size'?" in message
    assert "valid settings for scheme int4" in message and "group_size, " in message and "scheme, " in message


def test_nested_settings_and_values_point_at_their_lines():
    message = error_of(
        "passes:\n  - kind: quantize\n    targets:\n      types: [linear]\n      inclde: [x]\n"
    )
    assert message.startswith("r.yaml, line 5: passes[0].targets: unknown setting 'inclde'")
    assert "valid settings: exclude, include, types" in message
    message = error_of("passes:\n  - kind: quantize\n    scheme: int5\n")
    assert message.startswith("r.yaml, line 3: passes[0].scheme: unknown value 'int5'")
    assert "valid: int8, int4" in message
    message = error_of("passes: [{kind: quantize}]\nevaluate:\n  latency:\n    budget: 3\n")
    assert message.startswith("r.yaml, line 4: evaluate.latency: unknown setting 'budget'")
    assert "budget_s" in message


def test_a_combination_error_points_at_the_pass():
    message = error_of("version: 1\npasses:\n  - kind: quantize\n    scheme: int4\n    group_size: 12\n")
    assert message.startswith("r.yaml, line 3: ") and "not a power of two" in message


def test_yaml_syntax_errors_and_duplicate_keys_give_line_and_column():
    message = error_of("passes: [{kind: quantize]\n")
    assert message.startswith("r.yaml, line 1, column ") and "YAML syntax error" in message
    message = error_of("passes:\n  - kind: quantize\n    scheme: int8\n    scheme: int4\n")
    assert message == "r.yaml, line 4: duplicate key 'scheme' (first at line 3)."


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("- kind: quantize\n", "a recipe is a YAML mapping"),
        ("version: 1\n", "'passes' must be a non-empty list"),
        ("passes: []\n", "'passes' must be a non-empty list"),
        ("passes: [quantize]\n", "a pass is a mapping with a 'kind'"),
        ("passes: [{scheme: int8}]\n", "missing 'kind'; installed passes:"),
        ("version: 2\npasses: [{kind: quantize}]\n", "recipe version 2; this compress reads version 1"),
        ("passes: [{kind: quantize}]\ngate: {metric: size.ratio}\n", "'gate' must be a list of rules"),
        ("passes: [{kind: quantize}]\ngate: [{max: 1}]\n", "missing 'metric'"),
        ("passes: [{kind: quantize}]\ngate: [{metric: size.ratio}]\n", "give min, max, max_regression"),
        ("passes: [{kind: quantize}]\ngate: [{metric: size.ratio, mx: 1}]\n", "unknown setting 'mx'"),
        ("passes: [{kind: quantize}]\ncalibration: {samples: 0}\n", "samples: need at least 1"),
    ],
)
def test_structural_errors(text, expected):
    message = error_of(text)
    assert message.startswith("r.yaml"), message
    assert expected in message


def test_a_rule_on_absolute_latency_is_refused_in_favour_of_the_speedup():
    message = error_of("passes: [{kind: quantize}]\ngate:\n  - {metric: latency.cpu.p50_ms, max: 20}\n")
    assert message.startswith("r.yaml, line 3: ")
    assert "absolute times differ between machines and runs" in message
    assert "'latency.cpu.speedup'" in message


def test_a_latency_rule_needs_its_device_in_the_evaluation():
    message = error_of(
        "passes: [{kind: quantize}]\nevaluate: {devices: [cpu]}\ngate:\n"
        "  - {metric: size.ratio, max: 1}\n  - {metric: latency.cuda.speedup, min: 1}\n"
    )
    assert message == (
        "r.yaml, line 5: gate[1]: a rule on 'latency.cuda.speedup' needs device 'cuda' in "
        "evaluate.devices (now cpu)."
    )
    message = error_of(
        "passes: [{kind: quantize}]\ngate: [{metric: latency.cpu.onnxruntime.speedup, min: 1}]\n"
    )
    assert "needs runtime 'onnxruntime' in evaluate.runtimes (now torch)" in message


def test_pass_order_is_checked_up_front_with_the_line(monkeypatch):
    fake_passes.install(monkeypatch, fake_passes.PRUNE, fake_passes.DISTILL)
    message = error_of(
        "passes:\n  - kind: quantize\n  - kind: distill\n    epochs: 2\n  - kind: prune\n    sparsity: 0.3\n"
    )
    assert message.startswith("r.yaml, line 3: passes[1] (distill) comes after passes[0] (quantize)")
    assert "distill before quantizing" in message
    message = error_of("passes:\n  - {kind: quantize}\n  - {kind: prune}\n")
    assert message.startswith("r.yaml, line 3: passes[1] (prune) comes after passes[0] (quantize)")
    assert "prune the float model first" in message
    good = Recipe.loads("passes:\n  - {kind: prune}\n  - {kind: distill}\n  - {kind: quantize}\n")
    assert [p.kind for p in good.passes] == ["prune", "distill", "quantize"]


def test_pass_order_is_checked_for_recipes_built_in_python(monkeypatch):
    from compress.passes.quantize import QuantizeConfig

    fake_passes.install(monkeypatch, fake_passes.PRUNE)
    recipe = Recipe(passes=[QuantizeConfig(), fake_passes.PruneConfig()])
    with pytest.raises(BadInput, match=r"passes\[1\] \(prune\) comes after passes\[0\] \(quantize\)"):
        recipe.check_order()


def test_the_resolved_recipe_round_trips_through_yaml():
    recipe = Recipe.loads(
        "name: rt\npasses:\n  - {kind: quantize, scheme: int4, group_size: 32, symmetric: false}\n"
        "evaluate: {devices: [cpu], limit: 8}\ngate: [{metric: accuracy.retention, min: 0.98}]\n"
    )
    text = recipe.to_yaml()
    assert "group_size: 32" in text and "budget_s: 30.0" in text  # defaults are spelled out
    assert "kind: latency" not in text
    assert Recipe.loads(text) == recipe


def test_missing_and_unreadable_recipe_files(tmp_path):
    with pytest.raises(BadInput, match="no such file"):
        Recipe.load(tmp_path / "nope.yaml")
    with pytest.raises(BadInput, match="is a folder"):
        Recipe.load(tmp_path)
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(BadInput, match=r"bin\.yaml"):
        Recipe.load(tmp_path / "bin.yaml")


def test_shipped_recipes_are_valid():
    files = sorted((ROOT / "recipes").glob("*.yaml"))
    assert files, "recipes/ ships no recipe"
    for path in files:
        recipe = Recipe.load(path)
        assert recipe.name == path.stem
        assert recipe.gate, f"{path.name} has no gate rules"
