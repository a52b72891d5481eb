"""Evaluator pieces on hand-checkable inputs: metrics, probe, latency statistics, report schema."""

from __future__ import annotations

import json
from statistics import median

import pytest
import torch

import compress as cz
from compress.errors import BadInput
from compress.eval.data import load_labelled
from compress.eval.latency import LatencySettings, Timing, measure_pair, median_ci
from compress.eval.tasks import accuracy_and_f1, fit_probe, predict, retention
from compress.report import Report
from compress.testing import tiny_mlp


def test_accuracy_and_macro_f1_by_hand():
    acc, f1 = accuracy_and_f1([0, 0, 1, 1], [0, 1, 1, 1], 2)
    assert acc == 0.75
    # class 0: tp1 fp1 fn0 -> 2/3; class 1: tp2 fp0 fn1 -> 4/5
    assert f1 == pytest.approx((2 / 3 + 4 / 5) / 2)


def test_retention_direction():
    assert retention(0.9, 1.0, True) == pytest.approx(0.9)
    assert retention(12.0, 10.0, False) == pytest.approx(10 / 12)  # perplexity: lower is better


def test_probe_separates_separable_points_and_is_deterministic():
    x = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    w1 = fit_probe(x, [0, 0, 1, 1], 2)
    w2 = fit_probe(x, [0, 0, 1, 1], 2)
    assert torch.equal(w1, w2)
    assert predict(w1, torch.tensor([[0.8, 0.2], [0.2, 0.8]])) == [0, 1]


def test_builtin_spam_data_is_balanced_and_split():
    d = load_labelled("spam")
    assert d.label_names == ["ham", "spam"]
    assert len(d.train_texts) == len(d.test_texts) == 1000
    assert sum(d.test_labels) == 500


def test_a_limit_keeps_both_labels_in_proportion():
    """The built-in file lists ham before spam: a limit must not keep only the first rows."""
    d = load_labelled("spam", limit=200)
    assert len(d.train_texts) == len(d.test_texts) == 200
    assert 90 <= sum(d.train_labels) <= 110 and 90 <= sum(d.test_labels) <= 110  # about half spam


def test_user_data_files_and_their_errors(tmp_path):
    good = tmp_path / "d.jsonl"
    good.write_text("\n".join(json.dumps({"text": f"t{i}", "label": "ab"[i % 2]}) for i in range(20)))
    d = load_labelled(good)
    assert len(d.train_texts) + len(d.test_texts) == 20
    (tmp_path / "e.jsonl").write_text("")
    with pytest.raises(BadInput, match="has no rows"):
        load_labelled(tmp_path / "e.jsonl")
    (tmp_path / "n.csv").write_text("text,y\nhello,1\n")
    with pytest.raises(BadInput, match="no 'label' column"):
        load_labelled(tmp_path / "n.csv")
    (tmp_path / "one.jsonl").write_text(json.dumps({"text": "a", "label": "x"}))
    with pytest.raises(BadInput, match="two distinct labels"):
        load_labelled(tmp_path / "one.jsonl")


def test_median_ci_brackets_the_median():
    values = list(range(1, 101))
    lo, hi = median_ci(values)
    assert lo < 50.5 < hi
    assert hi - lo < 25


def test_timing_percentiles():
    t = Timing([1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
    assert t.p50 == 5.5 and t.p90 == pytest.approx(9.1) and t.iqr == pytest.approx(4.5)


class FakeTimes:
    """A timer for measure_pair that runs the function and reports a scripted duration instead of the
    machine's; it also advances a fake clock by that much, for the time budget."""

    def __init__(self, baseline_ms: list[float], candidate_ms: list[float]):
        self.script = {"b": baseline_ms, "c": candidate_ms}
        self.count = {"b": 0, "c": 0}
        self.calls: list[str] = []
        self.now = 0.0

    def run(self, which: str):
        return lambda: self.calls.append(which)

    def timer(self, fn) -> float:
        fn()
        which = self.calls[-1]
        script = self.script[which]
        ms = script[self.count[which] % len(script)]
        self.count[which] += 1
        self.now += ms / 1e3
        return ms

    def clock(self) -> float:
        return self.now


def test_measure_pair_interleaves_and_reports_a_slowdown_as_a_slowdown():
    times = FakeTimes([10.0], [20.0])
    settings = LatencySettings(warmup=2, min_rounds=10, max_rounds=50, budget_s=86400)
    pair = measure_pair(times.run("b"), times.run("c"), settings, timer=times.timer)
    assert pair.speedup == 0.5  # the candidate is twice as slow, and it is reported as such
    assert pair.speedup_ci == (0.5, 0.5)
    assert pair.rounds == 10  # every ratio equal: the interval is exact after min_rounds
    assert times.calls[:4] == ["b", "c", "b", "c"]  # warm-up, untimed
    timed = times.calls[4:]
    assert len(timed) == 20 and timed[:8] == ["b", "c", "c", "b", "b", "c", "c", "b"]  # order alternates
    assert pair.baseline.samples_ms == [10.0] * 10 and pair.candidate.samples_ms == [20.0] * 10


def test_speedup_is_the_ratio_of_the_medians_and_noise_runs_to_max_rounds():
    base, cand = [10.0, 12.0, 30.0, 11.0], [5.0, 8.0, 4.0, 5.0]
    times = FakeTimes(base, cand)
    settings = LatencySettings(warmup=0, min_rounds=3, max_rounds=20, budget_s=86400, target_rel_ci=1e-9)
    pair = measure_pair(times.run("b"), times.run("c"), settings, timer=times.timer)
    assert pair.rounds == 20  # a noisy ratio never meets a tolerance of 1e-9: the round limit stops it
    expected = median(base * 5) / median(cand * 5)  # 11.5 / 5: not the median of the per-round ratios
    assert pair.speedup == pytest.approx(expected) and pair.speedup == pytest.approx(2.3)
    ratios = [b / c for b, c in zip(base * 5, cand * 5, strict=True)]
    assert median(ratios) != pytest.approx(expected)
    assert pair.speedup_ci == median_ci(ratios)


def test_module_evaluation_with_sample_inputs_and_report_round_trip(tmp_path):
    mlp = tiny_mlp()
    x = torch.randn(4, 32)
    art = cz.quantize(mlp, scheme="int8")
    report = cz.evaluate(art, mlp, inputs=x, devices=("cpu",), latency=LatencySettings(budget_s=0.2))
    assert report.accuracy.task == "fidelity" and report.accuracy.value > 0.999
    assert report.size["measured"].startswith("tensors in memory")
    assert report.size["ratio"] < 0.3
    assert report.metric("latency.cpu.speedup") == report.latency[0]["speedup"]
    assert report.metric("accuracy.retention") == report.accuracy.retention
    assert report.metric("latency.cuda.speedup") is None
    back = Report.from_dict(json.loads(report.to_json()))
    assert back.to_dict()["size"] == report.to_dict()["size"]
    assert "<table>" in report._repr_html_() and "| size |" in report.to_markdown()


def test_report_of_another_schema_is_refused():
    with pytest.raises(BadInput, match="schema"):
        Report.from_dict({"schema": "compress.report/99"})


def test_a_version_1_report_still_loads(tiny_bert):
    data = cz.evaluate(tiny_bert, tiny_bert, devices=()).to_dict()
    data["schema"] = "compress.report/1"
    for added in ("sparsity", "compute"):  # keys /2 added
        del data[added]
    back = Report.from_dict(data)
    assert back.schema == "compress.report/3" and back.sparsity == {} and back.size == data["size"]


def test_mismatched_architectures_are_refused(tiny_bert, tiny_llama):
    with pytest.raises(BadInput, match="compare like with like"):
        cz.evaluate(tiny_llama, tiny_bert, devices=())


class FakeClock:
    """A clock the fake models advance: each call of a model takes `seconds` of its time, none of ours."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def model(self, seconds: float):
        def run():
            self.now += seconds

        return run

    def timer(self, fn) -> float:
        started = self.now
        fn()
        return (self.now - started) * 1e3


@pytest.mark.parametrize("budget", [1.6, 3.0, 7.3])
def test_the_budget_is_an_upper_bound_on_warm_up_and_rounds(budget):
    clock = FakeClock()
    noisy = iter([0.1, 0.3] * 1000)  # a candidate whose time varies, so the interval never narrows enough
    settings = LatencySettings(warmup=3, min_rounds=10, max_rounds=300, budget_s=budget)
    pair = measure_pair(
        clock.model(0.2), lambda: clock.model(next(noisy))(), settings, clock.timer, clock=clock
    )
    assert pair.seconds == pytest.approx(clock.now) and clock.now <= budget + 1e-9
    assert pair.budget_capped and pair.stopped_by == "budget"
    assert pair.rounds >= 2 and pair.warmup >= 1
    # no room was left unused: one more mean round would not have fitted
    mean_round = (sum(pair.baseline.samples_ms) + sum(pair.candidate.samples_ms)) / 1e3 / pair.rounds
    assert clock.now + mean_round > budget - 1e-9


def test_a_generous_budget_stops_at_convergence_not_at_the_budget():
    clock = FakeClock()
    settings = LatencySettings(warmup=3, min_rounds=10, max_rounds=300, budget_s=30)
    pair = measure_pair(clock.model(0.2), clock.model(0.1), settings, clock.timer, clock=clock)
    assert (pair.rounds, pair.warmup, pair.stopped_by, pair.budget_capped) == (10, 3, "converged", False)
    assert pair.speedup == pytest.approx(2.0)


def test_a_round_longer_than_the_budget_runs_the_minimum_once_and_says_so():
    from compress.eval.runtimes import budget_notes

    clock = FakeClock()
    settings = LatencySettings(warmup=3, min_rounds=10, budget_s=1.0)
    pair = measure_pair(clock.model(2.0), clock.model(1.0), settings, clock.timer, clock=clock)
    assert (pair.warmup, pair.rounds) == (1, 2) and pair.seconds == pytest.approx(9.0)
    row = {"status": "ok", "device": "cpu", "runtime": "torch", "rounds": pair.rounds}
    row |= {"warmup_rounds": pair.warmup, "timing_s": pair.seconds, "budget_capped": pair.budget_capped}
    (note,) = budget_notes([row], settings)
    assert "one round takes longer than the 1 s budget" in note and "9.0 s" in note
    capped = {**row, "timing_s": 0.9, "rounds": 4}
    assert "allowed 4 timed rounds (of the 10 wanted)" in budget_notes([capped], settings)[0]


def test_latency_rows_record_warm_up_rounds_and_whether_the_budget_capped_them():
    mlp = tiny_mlp()
    x = torch.randn(4, 32)
    report = cz.evaluate(
        cz.quantize(mlp, scheme="int8"),
        mlp,
        inputs=x,
        devices=("cpu",),
        latency=LatencySettings(budget_s=0.2),
    )
    (row,) = report.latency
    assert row["rounds"] >= 2 and row["warmup_rounds"] >= 1 and isinstance(row["budget_capped"], bool)
    assert row["timing_s"] > 0
