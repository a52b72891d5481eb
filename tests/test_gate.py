"""The gate: min/max rules, "no worse than the previous accepted run", bad rules, Markdown and JUnit
output, and `compress gate` exit codes (0 pass, 1 fail, 2 bad input)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest
from click.testing import CliRunner

from compress.cli import main
from compress.errors import BadInput
from compress.eval.tasks import AccuracyResult
from compress.gate import FAIL, PASS, SKIP, Rule, gate
from compress.report import Report


def make_report(retention=0.995, ratio=0.25, speedup=1.2, name="cand", source="a" * 64) -> Report:
    return Report(
        candidate={"name": name, "path": None, "recipe": [{"kind": "quantize"}], "source_sha256": source},
        baseline={"name": "base", "path": None},
        size={"bytes": 250, "baseline_bytes": 1000, "ratio": ratio},
        accuracy=AccuracyResult(
            status="ok",
            task="classification",
            metric="accuracy",
            value=0.9 * retention,
            baseline=0.9,
            retention=retention,
            details={"embedding_cosine_mean": 0.999},
        ),
        latency=[
            {
                "device": "cpu",
                "runtime": "torch",
                "status": "ok",
                "batch_size": 8,
                "seq_len": 128,
                "p50_ms": 10.0,
                "baseline_p50_ms": 10.0 * speedup,
                "speedup": speedup,
            },
            {"device": "cuda", "runtime": "torch", "status": "unavailable", "reason": "no CUDA device"},
        ],
        tensors=[{"name": "w", "scheme": "int8", "group_size": None, "sqnr_db": float("inf")}],
    )


RULES = [
    {"metric": "accuracy.retention", "min": 0.99},
    {"metric": "size.ratio", "max": 0.3},
    {"metric": "latency.cpu.speedup", "min": 1.1},
]


def test_min_and_max_rules_pass_and_fail_with_readable_reasons():
    verdict = gate(make_report(), RULES)
    assert verdict.passed and [c.status for c in verdict.checks] == [PASS, PASS, PASS]
    bad = gate(make_report(retention=0.95, ratio=0.4), RULES)
    assert not bad.passed
    assert [c.status for c in bad.checks] == [FAIL, FAIL, PASS]
    assert bad.checks[0].reason == "accuracy.retention is 0.95, below the minimum 0.99"
    assert bad.checks[1].reason == "size.ratio is 0.4, above the maximum 0.3"
    assert "2 of 3 checks failed" in bad.summary() and "below the minimum 0.99" in bad.summary()


def test_a_rule_with_min_and_max_gives_two_checks():
    verdict = gate(make_report(speedup=3.0), [{"metric": "latency.cpu.speedup", "min": 1.0, "max": 2.0}])
    assert [(c.condition, c.status) for c in verdict.checks] == [(">= 1", PASS), ("<= 2", FAIL)]


def test_regression_rule_compares_with_the_previous_run_in_the_right_direction():
    rules = [
        {"metric": "accuracy.retention", "max_regression": 0.005},
        {"metric": "size.ratio", "max_regression_pct": 10},
        {"metric": "latency.cpu.speedup", "max_regression_pct": 5},
    ]
    previous = make_report(retention=0.995, ratio=0.25, speedup=1.2)
    ok = gate(
        make_report(retention=0.991, ratio=0.27, speedup=1.15), rules, previous, previous_label="run #3"
    )
    assert ok.passed and ok.previous == "run #3"
    assert [c.previous for c in ok.checks] == [0.995, 0.25, 1.2]
    worse = gate(make_report(retention=0.989, ratio=0.28, speedup=1.1), rules, previous)
    assert [c.status for c in worse.checks] == [FAIL, FAIL, FAIL]
    assert "worse than the previous accepted run's 0.995 by 0.006 (allowed 0.005)" in worse.checks[0].reason
    # lower is better for size: a larger ratio is the regression, a smaller one is fine
    assert worse.checks[1].limit == pytest.approx(0.275)
    better = gate(make_report(ratio=0.1), rules[1:2], previous)
    assert better.passed


def test_regression_rules_are_skipped_without_a_previous_run():
    verdict = gate(make_report(), [{"metric": "accuracy.retention", "min": 0.9, "max_regression": 0.01}])
    assert [c.status for c in verdict.checks] == [PASS, SKIP]
    assert verdict.passed and "no previous accepted run" in verdict.notes[0]
    older = make_report()
    older.accuracy = AccuracyResult.unavailable("no architecture")
    skipped = gate(make_report(), [{"metric": "accuracy.retention", "max_regression": 0.01}], older)
    assert skipped.checks[0].status == SKIP and "has no accuracy.retention" in skipped.checks[0].reason


def test_direction_must_be_given_for_metrics_compress_cannot_judge():
    report, previous = make_report(), make_report()
    report.size["mystery"], previous.size["mystery"] = 5.0, 7.0
    with pytest.raises(BadInput, match="add higher_is_better: true or false"):
        gate(report, [{"metric": "size.mystery", "max_regression": 1}], previous)
    rule = {"metric": "size.mystery", "max_regression": 1, "higher_is_better": True}
    assert gate(report, [rule], previous).checks[0].status == FAIL
    rule["higher_is_better"] = False
    assert gate(report, [rule], previous).checks[0].status == PASS


def test_a_metric_the_report_lacks_is_bad_input_with_suggestions():
    with pytest.raises(BadInput, match=r"no such metric \(did you mean 'accuracy.retention'\?\)"):
        gate(make_report(), [{"metric": "accuracy.retension", "min": 0.9}])
    with pytest.raises(BadInput, match="latency cuda/torch is unavailable: no CUDA device"):
        gate(make_report(), [{"metric": "latency.cuda.speedup", "min": 1.5}])
    with pytest.raises(BadInput, match="not a number"):
        gate(make_report(), [{"metric": "accuracy.task", "min": 1}])
    with pytest.raises(BadInput, match="no rules"):
        gate(make_report(), [])


def test_infinite_values_written_as_strings_compare_as_numbers():
    verdict = gate(make_report(), [{"metric": "tensor_summary.sqnr_db_min", "min": 30}])
    assert verdict.passed and verdict.checks[0].value == float("inf")


def test_absolute_latency_rules_are_refused():
    for metric in ("latency.cpu.p50_ms", "latency.cpu.torch.throughput", "latency.cuda.baseline_p90_ms"):
        with pytest.raises(BadInput, match="absolute times differ between machines and runs"):
            Rule.parse({"metric": metric, "max_regression_pct": 5}, "rule")


def test_markdown_and_junit_show_every_check():
    previous = make_report()
    rules = [*RULES, {"metric": "accuracy.retention", "max_regression": 0.001}]
    verdict = gate(make_report(retention=0.95), rules, previous, previous_label="run #7")
    markdown = verdict.to_markdown()
    assert "compress gate: FAILED (cand)" in markdown
    assert "| `accuracy.retention >= 0.99` | 0.95 |  | ❌ fail | accuracy.retention is 0.95" in markdown
    assert "Compared with run #7." in markdown
    root = ET.fromstring(verdict.to_junit())
    assert root.tag == "testsuites" and root.get("tests") == "4" and root.get("failures") == "2"
    cases = root.findall("./testsuite/testcase")
    assert [c.get("name") for c in cases] == [
        "accuracy.retention >= 0.99",
        "size.ratio <= 0.3",
        "latency.cpu.speedup >= 1.1",
        "accuracy.retention within 0.001 of previous",
    ]
    failure = cases[0].find("failure")
    assert (
        failure is not None and failure.get("message") == "accuracy.retention is 0.95, below the minimum 0.99"
    )
    assert cases[1].find("failure") is None and cases[3].find("failure") is not None


# ---- the command --------------------------------------------------------------------------------


def write_report(path, report: Report):
    path.write_text(report.to_json())
    return str(path)


def gate_cli(*args):
    return CliRunner().invoke(main, ["gate", *args], catch_exceptions=False)


def test_gate_command_exit_codes_junit_and_step_summary(tmp_path, monkeypatch):
    good = write_report(tmp_path / "good.json", make_report())
    bad = write_report(tmp_path / "bad.json", make_report(retention=0.9))
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    options = ["--min-retention", "0.99", "--max-size-ratio", "0.3", "--min-speedup", "1.1"]
    result = gate_cli(good, *options, "--junit", str(tmp_path / "j.xml"))
    assert result.exit_code == 0, result.output
    assert "gate passed: 3 of 3 checks passed" in result.stderr
    assert ET.parse(tmp_path / "j.xml").getroot().get("failures") == "0"
    result = gate_cli(bad, *options, "--junit", str(tmp_path / "j.xml"))
    assert result.exit_code == 1
    assert "accuracy.retention is 0.9, below the minimum 0.99" in result.stderr
    assert ET.parse(tmp_path / "j.xml").getroot().get("failures") == "1"
    text = summary.read_text()
    assert text.startswith("earlier step\n")  # appended, not overwritten
    assert "compress gate: passed" in text and "compress gate: FAILED" in text
    assert "compress report: cand vs base" in text


def test_gate_command_takes_rules_from_a_recipe_and_generic_options(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("passes: [{kind: quantize}]\ngate:\n  - {metric: size.ratio, max: 0.2}\n")
    report = write_report(tmp_path / "r.json", make_report())
    result = gate_cli(report, "--recipe", str(recipe), "--min", "accuracy.details.embedding_cosine_mean=0.99")
    assert result.exit_code == 1 and "size.ratio is 0.25, above the maximum 0.2" in result.stderr
    assert "1 of 2 checks failed" in result.stderr
    result = gate_cli(report, "--max", "size.ratio=0.3", "--json", "-", "-q")
    assert result.exit_code == 0 and json.loads(result.stdout)["passed"] is True


@pytest.mark.parametrize(
    ("make_args", "expected"),
    [
        (lambda r: [r], "no gate rules"),
        (lambda r: [r, "--min", "acuracy.retention=0.9"], "did you mean 'accuracy.retention'"),
        (lambda r: [r, "--max", "latency.cpu.p50_ms=3"], "absolute times differ"),
        (lambda r: [r, "--min", "size.ratio"], "expected METRIC=VALUE"),
        (lambda r: [r + ".missing", "--min-retention", "1"], "no such report file"),
    ],
)
def test_gate_command_bad_input_exits_2(tmp_path, make_args, expected):
    report = write_report(tmp_path / "r.json", make_report())
    result = gate_cli(*make_args(report))
    assert result.exit_code == 2, result.output
    assert expected in result.stderr


def test_a_report_of_another_schema_version_exits_2(tmp_path):
    data = make_report().to_dict()
    data["schema"] = "compress.report/99"
    (tmp_path / "r.json").write_text(json.dumps(data))
    result = gate_cli(str(tmp_path / "r.json"), "--min-retention", "0.9")
    assert result.exit_code == 2 and "has schema 'compress.report/99'" in result.stderr
    (tmp_path / "broken.json").write_text('{"schema": "compress.report/1", "size": {}}')
    result = gate_cli(str(tmp_path / "broken.json"), "--min-retention", "0.9")
    assert result.exit_code == 2 and "is not a complete compress.report/3 report" in result.stderr


def test_against_last_compares_with_the_last_run_that_passed(tmp_path):
    first = write_report(tmp_path / "1.json", make_report(retention=0.999, name="one"))
    failed = write_report(tmp_path / "2.json", make_report(retention=0.95, name="two"))
    third = write_report(tmp_path / "3.json", make_report(retention=0.993, name="three"))
    assert gate_cli(first, "--min-retention", "0.99").exit_code == 0  # recorded as accepted
    assert gate_cli(failed, "--min-retention", "0.99").exit_code == 1  # recorded, not accepted
    result = gate_cli(third, "--min-retention", "0.99", "--against", "last", "--tolerance", "0.5")
    assert result.exit_code == 1
    # compared with run 1 (0.999), not with the failed run 2: 0.993 is 0.6% worse, 0.5% allowed
    assert "worse than the previous accepted run's 0.999" in result.stderr
    result = gate_cli(third, "--min-retention", "0.99", "--against", "last", "--tolerance", "1")
    assert result.exit_code == 0, result.stderr
    result = gate_cli(third, "--max-regression", "accuracy.retention=0.001", "--against", first)
    assert result.exit_code == 1 and "by 0.006 (allowed 0.001)" in result.stderr


def test_a_verdict_on_a_report_of_unknown_origin_stands_but_is_not_recorded(tmp_path):
    report = make_report(source=None)
    result = gate_cli(write_report(tmp_path / "r.json", report), "--min-retention", "0.9")
    assert result.exit_code == 0 and "verdict not recorded" in result.stderr
    result = gate_cli(str(tmp_path / "r.json"), "--min-retention", "0.9", "--against", "last")
    assert result.exit_code == 2 and "does not say which model" in result.stderr
