"""Generation metrics of causal LMs: time to first token, decode tokens per second, peak memory and
greedy agreement, baseline beside candidate, on every device and runtime that can decode.

One forward pass of 8 x 128 tokens (the latency rows) is not what a language model's users wait
for: they wait for the first token of an answer, then for each next one. Each row here times greedy
generation of `new_tokens` tokens after a prompt of `prompt_tokens` tokens (windows of the built-in
wiki text), at one batch size: the time to the first token (prefill and first pick) and the decode
rate of the remaining tokens (all sequences of the batch together). Baseline and candidate run
interleaved, in alternating order, for repeated rounds; the medians, their spread and the ratios'
95% intervals are reported, as for latency. The timing `--budget` bounds all rows of one device and
runtime together: a round that would not fit in what is left is not started, and a batch size
that gets no round is reported as unavailable, with the numbers.

Greedy agreement: a few prompts decoded `agreement_tokens` tokens by both models; the fraction of
positions where the candidate's token equals the baseline's, and the length of their common prefix.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from compress.config import Settings
from compress.errors import BadInput, CompressError, Unavailable
from compress.eval.decoders import Clock, Decoder, Generated, decoder_for, missing_decoder
from compress.eval.latency import LatencySettings, Timing, median_ci
from compress.model import Model

# Upper bounds that catch a typo before it becomes a MemoryError (as LatencySettings has).
LIMITS = {
    "prompt_tokens": 1_048_576,
    "new_tokens": 1_048_576,
    "agreement_prompts": 1_024,
    "agreement_tokens": 1_048_576,
    "min_rounds": 100_000,
    "max_rounds": 100_000,
}
MAX_BATCH = 65_536
WARMUP_TOKENS = 2  # a short run before timing: allocates caches, and predicts a round's time
_TEXT_CHARS_PER_TOKEN = 8  # text to tokenize for the prompts: generous, every tokenizer fits


@dataclass(frozen=True, kw_only=True)
class GenerationSettings(Settings):
    """Time to first token, decode speed and greedy agreement of causal LMs (`evaluate: generation:`).

    enabled: None (default) measures causal LMs and skips other models; True asks for it (other
      models get a note saying why not); False skips it.
    prompt_tokens: prompt length for the time to first token. new_tokens: greedy tokens per timed
      run (no stop at an end-of-sequence token). batch_sizes: a row for each.
    agreement_prompts, agreement_tokens: prompts decoded by both models and the first k greedy tokens
      compared (0 prompts: no agreement check).
    min_rounds, max_rounds: interleaved rounds; the latency budget (`--budget`) bounds their time.
    """

    kind: ClassVar[str] = "generation"
    enabled: bool | None = None
    prompt_tokens: int = 128
    new_tokens: int = 64
    batch_sizes: tuple[int, ...] = (1, 8)
    agreement_prompts: int = 4
    agreement_tokens: int = 32
    min_rounds: int = 3
    max_rounds: int = 10

    def validate(self) -> None:
        for name, top in LIMITS.items():
            low = {"agreement_prompts": 0, "new_tokens": 2}.get(name, 1)  # 2: a first token, then decoding
            value = getattr(self, name)
            if not low <= value <= top:
                raise BadInput(f"generation: {name} must be between {low} and {top:,}, got {value:,}.")
        if not self.batch_sizes or not all(1 <= b <= MAX_BATCH for b in self.batch_sizes):
            raise BadInput(
                f"generation: batch_sizes must be between 1 and {MAX_BATCH:,}, got {list(self.batch_sizes)}."
            )
        if self.max_rounds < self.min_rounds:
            raise BadInput(f"generation: max_rounds {self.max_rounds} is below min_rounds {self.min_rounds}.")

    def wanted(self, model: Model) -> bool:
        return self.enabled if self.enabled is not None else model.family == "causal-lm"


def unavailable(device: str, runtime: str, reason: str, batch_size: int | None = None) -> dict:
    return {
        "device": device,
        "runtime": runtime,
        "status": "unavailable",
        "reason": reason,
        "batch_size": batch_size,
    }


def generation_rows(
    cand: Model,
    base: Model,
    devices: Sequence[str],
    runtimes: Sequence[str],
    settings: GenerationSettings | dict | None,
    latency: LatencySettings,
    progress=None,
    clock: Clock = time.perf_counter,
) -> tuple[list[dict], list[str]]:
    """The report's `generation` rows (one per device, runtime and batch size) and notes."""
    if not isinstance(settings, GenerationSettings):
        settings = GenerationSettings.from_dict(settings, "generation")
    if not settings.wanted(base):
        return [], []
    if base.family != "causal-lm":  # asked for (enabled: true) on a model that does not generate
        return [], [f"generation: not measured: a {base.family} model does not generate text"]
    try:
        ids = prompt_ids(base, max(*settings.batch_sizes, settings.agreement_prompts), settings)
    except Unavailable as exc:
        return [unavailable(d, r, str(exc)) for d in devices for r in runtimes], []
    rows = []
    for device in devices:
        for runtime in runtimes:
            rows += runtime_rows(cand, base, device, runtime, ids, settings, latency, progress, clock)
    note = (
        f"generation: greedy, {settings.prompt_tokens}-token prompts from the built-in wiki text, "
        f"{settings.new_tokens} new tokens without stopping at end-of-sequence; decode tokens/s counts "
        "every sequence of the batch"
    )
    return rows, [note] if any(r["status"] == "ok" for r in rows) else []


def prompt_ids(model: Model, count: int, settings: GenerationSettings) -> Any:
    """[count, prompt_tokens] token ids: consecutive windows of the built-in wiki text, each
    starting with the tokenizer's beginning-of-sequence token when it has one."""
    import torch

    from compress.eval.data import load_text

    if model.tokenizer is None:
        raise Unavailable("needs the model's tokenizer (no tokenizer files beside the checkpoint)")
    longest = settings.prompt_tokens + max(settings.new_tokens, settings.agreement_tokens)
    limit = getattr(model.config, "max_position_embeddings", None) if model.config else None
    if limit is not None and longest > limit:
        raise Unavailable(
            f"{settings.prompt_tokens} prompt + {max(settings.new_tokens, settings.agreement_tokens)} new "
            f"tokens exceed the model's {limit} positions; lower --prompt-tokens or --new-tokens"
        )
    length = settings.prompt_tokens
    text = load_text("wiki")[: max(count, 1) * length * _TEXT_CHARS_PER_TOKEN]
    tokens = model.tokenizer(text, add_special_tokens=False)["input_ids"]
    while len(tokens) < count * length:  # a tokenizer with long tokens: reuse the text
        tokens = tokens + tokens
    rows = torch.tensor([tokens[i * length : (i + 1) * length] for i in range(max(count, 1))])
    bos = getattr(model.tokenizer, "bos_token_id", None)
    if bos is not None:
        rows[:, 0] = bos
    return rows


def runtime_rows(
    cand: Model,
    base: Model,
    device: str,
    runtime: str,
    ids: Any,
    settings: GenerationSettings,
    latency: LatencySettings,
    progress,
    clock: Clock,
) -> list[dict]:
    """One row per batch size for one device and runtime, all within one timing budget."""
    import torch

    from compress.eval.memory import cuda_during, rss_during
    from compress.eval.runtimes import device_available

    try:
        device_available(device, runtime)
    except Unavailable as exc:
        return [unavailable(device, runtime, str(exc))]
    if missing_decoder(runtime):
        return [unavailable(device, runtime, missing_decoder(runtime))]
    threads = latency.threads or torch.get_num_threads()
    decoders: list[Decoder] = []
    with torch_threads(threads):
        try:
            for who, model in (("baseline", base), ("candidate", cand)):
                try:
                    decoders.append(decoder_for(runtime, model, device, threads))
                except CompressError as exc:
                    return [unavailable(device, runtime, f"{who}: {exc}")]
            base_d, cand_d = decoders
            agreement = {}
            if settings.agreement_prompts:
                prompts = ids[: settings.agreement_prompts]
                agreement = greedy_agreement(base_d, cand_d, prompts, settings.agreement_tokens, clock)
            memory = cuda_during if (device, runtime) == ("cuda", "torch") else rss_during
            budget = Budget(latency.budget_s, clock)
            rows = []
            for batch in sorted(settings.batch_sizes):
                timing = Timer(base_d, cand_d, ids[:batch], settings, memory, clock)
                row = timing.measure(budget, latency.target_rel_ci, progress)
                rows.append(_row(device, runtime, batch, settings, threads, row, agreement))
        finally:
            for decoder in decoders:
                decoder.close()
    if runtime == "torch" and cand.module is not None:
        from compress.qmodules import kernels_ran

        ran = kernels_ran(cand.module)  # the last call: a decode step of the last batch size
        for row in rows:
            if ran and row["status"] == "ok":
                row["torch_kernels"] = ran
    return rows


def _row(device, runtime, batch, settings, threads, measured: dict | str, agreement: dict) -> dict:
    if isinstance(measured, str):
        return unavailable(device, runtime, measured, batch)
    head = {"device": device, "runtime": runtime, "status": "ok", "reason": None, "batch_size": batch}
    shape = {"prompt_tokens": settings.prompt_tokens, "new_tokens": settings.new_tokens, "threads": threads}
    return {**head, **shape, **measured, **agreement}


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class Budget:
    """Seconds of timing left for one device and runtime, read from the evaluation's clock."""

    def __init__(self, seconds: float, clock: Clock):
        self.seconds, self.clock, self.start = seconds, clock, clock()
        self.last_round = 0.0  # the latest round's time: a bigger batch takes at least as long

    def left(self) -> float:
        return self.seconds - (self.clock() - self.start)


@dataclass
class Timer:
    """Interleaved greedy runs of a baseline and a candidate decoder on one batch of prompts."""

    base: Decoder
    cand: Decoder
    ids: Any
    settings: GenerationSettings
    memory: Callable[[Callable[[], object]], dict]
    clock: Clock

    def measure(self, budget: Budget, target_rel_ci: float, progress=None) -> dict | str:
        """The measured fields, or why no round fitted in the budget."""
        s, batch = self.settings, int(self.ids.shape[0])
        if budget.last_round > budget.left():
            return _over_budget(budget, batch, budget.last_round)
        started = self.clock()
        warm = [d.generate(self.ids, WARMUP_TOKENS, self.clock) for d in (self.base, self.cand)]
        predicted = sum(_predict(g, s.new_tokens) for g in warm)
        base_runs: list[Generated] = []
        cand_runs: list[Generated] = []
        mem: dict = {}
        stopped_by = "max_rounds"
        if progress:
            progress.start(f"measuring generation at batch {batch}", total=s.max_rounds)
        for round_no in range(s.max_rounds):
            if predicted > budget.left():
                stopped_by = "budget"
                break
            round_started = self.clock()
            pairs = [(self.base, base_runs, "baseline_"), (self.cand, cand_runs, "")]
            for decoder, runs, prefix in pairs if round_no % 2 == 0 else pairs[::-1]:
                run = self._run(decoder, runs)
                if round_no == 0:
                    mem.update({prefix + key: value for key, value in self.memory(run).items()})
                else:
                    run()
            predicted = budget.last_round = self.clock() - round_started
            if progress:
                progress.advance()
            if len(base_runs) >= s.min_rounds and _settled(base_runs, cand_runs, target_rel_ci):
                stopped_by = "converged"
                break
        if progress:
            progress.done()
        if not base_runs:
            return _over_budget(budget, batch, predicted)
        spent = {"timing_s": self.clock() - started, "budget_capped": stopped_by == "budget"}
        return summarize(base_runs, cand_runs, batch, s.new_tokens) | spent | mem

    def _run(self, decoder: Decoder, runs: list[Generated]) -> Callable[[], None]:
        return lambda: runs.append(decoder.generate(self.ids, self.settings.new_tokens, self.clock))


def _predict(warm: Generated, new_tokens: int) -> float:
    """A run's time predicted from a warm-up run of WARMUP_TOKENS tokens."""
    per_token = (warm.total_s - warm.ttft_s) / (WARMUP_TOKENS - 1)
    return warm.ttft_s + (new_tokens - 1) * per_token


def _over_budget(budget: Budget, batch: int, predicted: float) -> str:
    return (
        f"the {budget.seconds:g} s timing budget (--budget) ran out: a round of baseline and candidate "
        f"at batch {batch} takes about {predicted:.1f} s and {max(budget.left(), 0):.1f} s were left; "
        "raise --budget or lower --new-tokens"
    )


def _rate(run: Generated, batch: int, new_tokens: int) -> float:
    """Decode tokens per second of a run: every sequence's tokens after the first."""
    decode = run.total_s - run.ttft_s
    return batch * (new_tokens - 1) / decode if decode > 0 else float("inf")


def _settled(base: list[Generated], cand: list[Generated], target_rel_ci: float) -> bool:
    """The 95% interval of the median decode-rate ratio is within target_rel_ci of it (the ratio
    does not depend on the batch size or token count, which both runs share)."""
    ratios = [_rate(c, 1, 2) / _rate(b, 1, 2) for b, c in zip(base, cand, strict=True)]
    lo, hi = median_ci(ratios)
    return (hi - lo) / 2 <= target_rel_ci * statistics.median(ratios)


def summarize(base: list[Generated], cand: list[Generated], batch: int, new_tokens: int) -> dict:
    """Medians, interquartile ranges and ratios of interleaved runs (round i: base[i], cand[i])."""
    b_ttft, c_ttft = (Timing([r.ttft_s * 1e3 for r in runs]) for runs in (base, cand))
    b_rate, c_rate = (Timing([_rate(r, batch, new_tokens) for r in runs]) for runs in (base, cand))
    pairs = list(zip(base, cand, strict=True))
    ttft_ratios = [b.ttft_s / c.ttft_s if c.ttft_s > 0 else float("inf") for b, c in pairs]
    decode_ratios = [_rate(c, batch, new_tokens) / _rate(b, batch, new_tokens) for b, c in pairs]
    return {
        "ttft_ms": c_ttft.p50,
        "ttft_iqr_ms": c_ttft.iqr,
        "baseline_ttft_ms": b_ttft.p50,
        "baseline_ttft_iqr_ms": b_ttft.iqr,
        "ttft_speedup": b_ttft.p50 / c_ttft.p50 if c_ttft.p50 > 0 else float("inf"),
        "ttft_speedup_ci": list(median_ci(ttft_ratios)),
        "decode_tokens_per_s": c_rate.p50,
        "decode_tokens_per_s_iqr": c_rate.iqr,
        "baseline_decode_tokens_per_s": b_rate.p50,
        "baseline_decode_tokens_per_s_iqr": b_rate.iqr,
        "decode_speedup": c_rate.p50 / b_rate.p50,
        "decode_speedup_ci": list(median_ci(decode_ratios)),
        "rounds": len(pairs),
    }


def greedy_agreement(base: Decoder, cand: Decoder, prompts: Any, tokens: int, clock: Clock) -> dict:
    """How far the candidate's greedy continuation of each prompt follows the baseline's."""
    baseline_tokens = base.generate(prompts, tokens, clock).tokens
    return agreement_of(baseline_tokens, cand.generate(prompts, tokens, clock).tokens)


def agreement_of(baseline_tokens: Any, candidate_tokens: Any) -> dict:
    """[prompts, k] token ids of each: the mean fraction of equal positions, and the common prefix."""
    same = (baseline_tokens == candidate_tokens).long()
    prefix = same.cumprod(dim=1).sum(dim=1)
    return {
        "greedy_agreement": same.float().mean(dim=1).mean().item(),
        "common_prefix_mean": prefix.float().mean().item(),
        "common_prefix_min": int(prefix.min().item()),
        "agreement_prompts": int(same.shape[0]),
        "agreement_tokens": int(same.shape[1]),
    }
