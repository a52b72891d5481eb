"""Generation metrics of causal LMs: greedy decoding with the KV cache, time to first token and
decode rate (arithmetic checked with a fake clock, never against wall time), the budget, greedy
agreement, unavailable runtimes, the report, the gate and the recipe."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

import compress as cz
from compress.cli import main
from compress.errors import BadInput
from compress.eval.decoders import Decoder, Generated, torch_decoder
from compress.eval.generation import (
    Budget,
    GenerationSettings,
    Timer,
    agreement_of,
    generation_rows,
    summarize,
)
from compress.eval.latency import LatencySettings
from compress.recipe import Recipe
from compress.report import Report
from compress.testing import write_tiny_llama

ONE_THREAD = LatencySettings(threads=1, budget_s=120, warmup=0, min_rounds=1, max_rounds=2)
SMALL = GenerationSettings(
    prompt_tokens=16, new_tokens=6, batch_sizes=(1, 2), agreement_prompts=2, agreement_tokens=8, min_rounds=2
)


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeDecoder:
    """A decoder whose runs take `ttft` seconds for the first token and `per_token` for each next
    one, on a fake clock; it 'generates' token i + offset at position i."""

    def __init__(self, clock: FakeClock, ttft: float, per_token: float, offset: int = 0):
        self.clock, self.ttft, self.per_token, self.offset = clock, ttft, per_token, offset
        self.runs = 0

    def generate(self, ids, new_tokens: int, clock) -> Generated:
        start = clock()
        self.clock.now += self.ttft
        first = clock()
        self.clock.now += self.per_token * (new_tokens - 1)
        self.runs += 1
        tokens = (torch.arange(new_tokens) + self.offset).repeat(ids.shape[0], 1)
        return Generated(tokens, first - start, clock() - start)

    def decoder(self) -> Decoder:
        return Decoder(self.generate)


def _no_memory(fn):
    fn()
    return {"peak_rss_mb": 1.0}


def test_torch_decoder_with_its_cache_equals_greedy_decoding_without_one(tmp_path):
    # Untied embeddings: a random tied model only repeats its last token, which a broken cache would too.
    model = cz.load(write_tiny_llama(tmp_path / "llama", tie=False))
    ids = torch.randint(5, 100, (2, 12), generator=torch.Generator().manual_seed(0))
    ticks = iter(range(100))
    run = torch_decoder(model, "cpu", 1).generate(ids, 12, lambda: float(next(ticks)))
    sequence = ids
    with torch.inference_mode():
        for _ in range(12):  # the whole sequence again at every step, no cache, no stop at EOS
            token = model.module(input_ids=sequence, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
            sequence = torch.cat([sequence, token], dim=1)
    assert torch.equal(run.tokens, sequence[:, 12:])
    assert len(set(run.tokens[0].tolist())) > 3  # a real continuation, not one token repeated
    assert (run.ttft_s, run.total_s) == (1.0, 2.0)  # the clock was read at start, first token, end


def test_summary_arithmetic_on_known_times():
    base = [Generated(None, 0.2, 1.2), Generated(None, 0.4, 1.4)]  # 10 decode steps of batch 2 in 1 s
    cand = [Generated(None, 0.1, 0.6), Generated(None, 0.1, 0.35)]  # in 0.5 s, then 0.25 s
    row = summarize(base, cand, batch=2, new_tokens=11)
    assert row["baseline_ttft_ms"] == pytest.approx(300) and row["ttft_ms"] == pytest.approx(100)
    assert row["ttft_speedup"] == pytest.approx(3.0)
    assert row["baseline_decode_tokens_per_s"] == pytest.approx(20.0)
    assert row["decode_tokens_per_s"] == pytest.approx((40 + 80) / 2)
    assert row["decode_speedup"] == pytest.approx(60 / 20)
    assert row["decode_speedup_ci"] == [pytest.approx(2.0), pytest.approx(4.0)]
    assert row["rounds"] == 2


@pytest.mark.parametrize("min_rounds, rounds", [(3, 3), (50, 4)], ids=["settled", "budget"])
def test_rounds_alternate_and_stop_when_settled_or_at_the_budget(min_rounds, rounds):
    clock = FakeClock()
    base, cand = FakeDecoder(clock, 1.0, 0.1), FakeDecoder(clock, 0.5, 0.05)
    settings = GenerationSettings(new_tokens=11, min_rounds=min_rounds, max_rounds=50)
    timer = Timer(base.decoder(), cand.decoder(), torch.zeros(1, 4), settings, _no_memory, clock)
    # warm-up: 1.1 + 0.55 s; each round: 2.0 + 1.0 s; a budget of 14 s fits the warm-up and 4 rounds.
    # Every round gives the same ratio, so its interval is settled as soon as min_rounds are done.
    row = timer.measure(Budget(14.0, clock), target_rel_ci=0.02)
    assert row["rounds"] == rounds and base.runs == cand.runs == 1 + rounds
    assert row["ttft_speedup"] == pytest.approx(2.0) and row["decode_speedup"] == pytest.approx(2.0)
    assert row["decode_tokens_per_s"] == pytest.approx(20.0)
    assert row["peak_rss_mb"] == row["baseline_peak_rss_mb"] == 1.0
    assert clock.now <= 14.0


def test_a_round_that_does_not_fit_the_budget_is_reported_not_run():
    clock = FakeClock()
    base, cand = FakeDecoder(clock, 1.0, 0.1), FakeDecoder(clock, 1.0, 0.1)
    timer = Timer(base.decoder(), cand.decoder(), torch.zeros(8, 4), SMALL, _no_memory, clock)
    reason = timer.measure(Budget(3.0, clock), target_rel_ci=0.0)
    assert isinstance(reason, str) and "--budget" in reason and "batch 8" in reason
    assert base.runs == 1  # the warm-up only


def test_agreement_counts_equal_positions_and_the_common_prefix():
    base = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]])
    cand = torch.tensor([[1, 2, 9, 4], [5, 6, 7, 8]])
    result = agreement_of(base, cand)
    assert result["greedy_agreement"] == pytest.approx((0.75 + 1.0) / 2)
    assert result["common_prefix_mean"] == pytest.approx(3.0) and result["common_prefix_min"] == 2
    assert (result["agreement_prompts"], result["agreement_tokens"]) == (2, 4)


def _rows(candidate, baseline, settings=SMALL, runtimes=("torch",)):
    return generation_rows(candidate, baseline, ("cpu",), runtimes, settings, ONE_THREAD)


def test_a_model_against_itself_agrees_and_is_measured_at_each_batch_size(tiny_llama):
    report = cz.evaluate(
        tiny_llama,
        tiny_llama,
        task="fidelity",
        devices=("cpu",),
        latency=ONE_THREAD,
        generation=SMALL,
        history=None,
    )
    rows = report.generation
    assert [(r["runtime"], r["batch_size"], r["status"]) for r in rows] == [
        ("torch", 1, "ok"),
        ("torch", 2, "ok"),
    ]
    for row in rows:
        assert row["greedy_agreement"] == 1.0 and row["common_prefix_min"] == 8
        assert row["rounds"] >= 2 and row["ttft_ms"] > 0 and row["decode_tokens_per_s"] > 0
        assert row["ttft_speedup"] == pytest.approx(row["baseline_ttft_ms"] / row["ttft_ms"])
        low, high = row["decode_speedup_ci"]
        assert low <= high
        assert row["peak_rss_mb"] is None or row["peak_rss_mb"] > 0
    assert report.metric("latency.cpu.decode_speedup") == rows[0]["decode_speedup"]
    assert report.metric("generation.cpu.torch.b2.ttft_speedup") == rows[1]["ttft_speedup"]
    verdict = cz.gate(report, [{"metric": "generation.cpu.torch.greedy_agreement", "min": 1.0}])
    assert verdict.passed
    markdown = report.to_markdown()
    assert "first token" in markdown and "greedy agreement" in markdown
    again = Report.from_dict(json.loads(report.to_json()))
    assert again.generation == json.loads(report.to_json())["generation"]


def test_a_broken_candidate_disagrees(tiny_llama):
    base, broken = cz.load(tiny_llama), cz.load(tiny_llama)
    with torch.no_grad():
        broken.module.model.norm.weight.mul_(-1)  # negated logits: greedy picks the least likely token
    rows, _ = _rows(broken, base, SMALL.replace(batch_sizes=(1,), min_rounds=1, max_rounds=1))
    assert rows[0]["status"] == "ok"
    assert rows[0]["greedy_agreement"] < 1 and rows[0]["common_prefix_min"] < 8


def test_quantized_candidate_names_the_kernel_it_decoded_with(tiny_llama, tmp_path):
    int4 = cz.quantize(str(tiny_llama), "int4", group_size=32).save(tmp_path / "int4")
    rows, _ = _rows(cz.load(int4), cz.load(tiny_llama), SMALL.replace(batch_sizes=(1,), max_rounds=2))
    # 14 INT4 Linear layers; the output head, tied to the embedding table, is INT8 by default
    want = {"torch._weight_int4pack_mm_for_cpu": 14, "torch._weight_int8pack_mm": 1}
    assert rows[0]["torch_kernels"] == want


def test_runtimes_without_a_decoder_and_absent_devices_are_unavailable_with_a_reason(tiny_llama):
    model = cz.load(tiny_llama)
    rows, _ = generation_rows(model, model, ("cpu", "cuda"), ("onnxruntime",), SMALL, ONE_THREAD)
    assert [r["status"] for r in rows] == ["unavailable", "unavailable"]
    assert "no decoder" in rows[0]["reason"] and "KV cache" in rows[0]["reason"]
    if not torch.cuda.is_available():
        assert "CUDA" in rows[1]["reason"]
    report = cz.evaluate(tiny_llama, tiny_llama, task="fidelity", devices=(), history=None)
    report.generation = rows
    with pytest.raises(BadInput, match="no decoder"):
        cz.gate(report, [{"metric": "generation.cpu.onnxruntime.decode_speedup", "min": 1}])


def test_prompts_longer_than_the_model_are_unavailable(tiny_llama):
    model = cz.load(tiny_llama)  # 256 positions
    rows, _ = _rows(model, model, SMALL.replace(prompt_tokens=250))
    assert rows[0]["status"] == "unavailable" and "256 positions" in rows[0]["reason"]


def test_encoders_get_no_generation_rows(tiny_bert):
    bert = cz.load(tiny_bert)
    assert _rows(bert, bert) == ([], [])
    rows, notes = _rows(bert, bert, SMALL.replace(enabled=True))
    assert rows == [] and "encoder" in notes[0]
    assert _rows(bert, bert, SMALL.replace(enabled=False)) == ([], [])


def test_generation_can_be_switched_off(tiny_llama):
    model = cz.load(tiny_llama)
    assert _rows(model, model, SMALL.replace(enabled=False)) == ([], [])


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"new_tokens": 1}, "between 2 and"),
        ({"prompt_tokens": 10**9}, "prompt_tokens must be between 1 and 1,048,576"),
        ({"batch_sizes": []}, "batch_sizes"),
        ({"min_rounds": 5, "max_rounds": 2}, "below min_rounds"),
        ({"new_token": 8}, "did you mean 'new_tokens'"),
    ],
)
def test_bad_settings_are_one_sentence(settings, message):
    with pytest.raises(BadInput, match=message):
        GenerationSettings.from_dict(settings)


def test_gate_refuses_absolute_generation_times_and_knows_the_direction():
    with pytest.raises(BadInput, match="decode_speedup"):
        cz.gate(_report_with([]), [{"metric": "generation.cpu.torch.decode_tokens_per_s", "min": 5}])
    with pytest.raises(BadInput, match="ttft_speedup"):
        cz.gate(_report_with([]), [{"metric": "generation.cpu.ttft_ms", "max": 5}])
    row = {"device": "cpu", "runtime": "torch", "status": "ok", "batch_size": 1, "decode_speedup": 1.5}
    previous, now = _report_with([row]), _report_with([{**row, "decode_speedup": 1.2}])
    rule = {"metric": "latency.cpu.decode_speedup", "max_regression_pct": 10}
    assert not cz.gate(now, [rule], previous).passed  # lower is worse: a 20% regression


def _report_with(rows: list[dict]) -> Report:
    from compress.eval.tasks import AccuracyResult

    return Report(
        candidate={"name": "c"},
        baseline={"name": "b"},
        size={},
        accuracy=AccuracyResult.unavailable("none"),
        generation=rows,
    )


def test_recipe_generation_settings_are_strict_and_round_trip():
    recipe = Recipe.loads(
        "passes: [{kind: quantize}]\n"
        "evaluate: {devices: [cpu], generation: {new_tokens: 16, batch_sizes: [1]}}\n"
        "gate: [{metric: generation.cpu.torch.decode_speedup, min: 1.0}]\n"
    )
    assert recipe.evaluation.generation == GenerationSettings(new_tokens=16, batch_sizes=(1,))
    assert Recipe.loads(recipe.to_yaml()).evaluation.generation == recipe.evaluation.generation
    with pytest.raises(BadInput, match="prompt_tokens"):
        Recipe.loads("passes: [{kind: quantize}]\nevaluate: {generation: {prompt_token: 8}}\n")
    with pytest.raises(BadInput, match="enabled: false"):
        Recipe.loads(
            "passes: [{kind: quantize}]\nevaluate: {devices: [cpu], generation: {enabled: false}}\n"
            "gate: [{metric: latency.cpu.decode_speedup, min: 1.0}]\n"
        )


def test_cli_eval_options(tiny_llama, tmp_path):
    common = [str(tiny_llama), "--baseline", str(tiny_llama), "--device", "cpu", "--task", "fidelity"]
    common += ["--threads", "1", "--budget", "60", "--batch-size", "1", "--seq-len", "16"]
    common += ["--no-history", "-q", "--json", "-"]
    quick = ["--prompt-tokens", "16", "--new-tokens", "4", "--generate-batch", "2"]
    result = CliRunner().invoke(main, ["eval", *common, *quick], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["generation"]
    assert [(r["batch_size"], r["new_tokens"], r["prompt_tokens"]) for r in rows] == [(2, 4, 16)]
    result = CliRunner().invoke(main, ["eval", *common, "--no-generate"], catch_exceptions=False)
    assert json.loads(result.stdout)["generation"] == []
    result = CliRunner().invoke(main, ["eval", *common, "--generate-batch", "one"])
    assert result.exit_code == 2 and "--generate-batch" in result.output


def test_openvino_decodes_the_stateful_ir_as_torch_decodes_the_module(tiny_llama, tmp_path):
    """The openvino decoder (a stateful IR converted for the run, or the folder's exported one)
    picks the tokens torch picks; quantized activations are unavailable with the reason."""
    pytest.importorskip("openvino")
    model = cz.load(tiny_llama)
    settings = SMALL.replace(batch_sizes=(1,), min_rounds=1, max_rounds=1)
    rows, _ = generation_rows(model, model, ("cpu",), ("torch", "openvino"), settings, ONE_THREAD)
    assert [(r["runtime"], r["status"]) for r in rows] == [("torch", "ok"), ("openvino", "ok")]
    assert rows[1]["greedy_agreement"] == 1.0 and rows[1]["decode_tokens_per_s"] > 0
    exported = cz.quantize(str(tiny_llama), "int8", export=("openvino",)).save(tmp_path / "int8")
    rows, _ = generation_rows(cz.load(exported), model, ("cpu",), ("openvino",), settings, ONE_THREAD)
    assert rows[0]["status"] == "ok" and rows[0]["greedy_agreement"] >= 0.5
    static = cz.quantize(str(tiny_llama), "int8", activations="static", data=torch.randint(0, 100, (4, 16)))
    rows, _ = generation_rows(static.model, model, ("cpu",), ("openvino",), settings, ONE_THREAD)
    assert rows[0]["status"] == "unavailable" and "weight-only" in rows[0]["reason"]
