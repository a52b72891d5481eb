"""Latency of a baseline and a candidate, measured interleaved so machine noise hits both alike.

Each round runs both models once, in alternating order. After a warm-up, rounds continue until the
95% confidence interval of the median per-round speedup is within `target_rel_ci` of it (after at
least `min_rounds`), or the round limit is reached, or the next round would not fit in the time
budget: the budget (warm-up included) is an upper bound, and a row says when it cut the rounds
short. Reported: p50, p90 and IQR of each, throughput, and the speedup (baseline p50 / candidate
p50), with its interval. On CUDA, time comes from CUDA events
after synchronising.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

from compress.config import Settings
from compress.errors import BadInput

# Upper bounds that catch a typo (batch_size: 100000000000) before it becomes a MemoryError.
LIMITS = {
    "batch_size": 65_536,
    "seq_len": 1_048_576,
    "threads": 4_096,
    "warmup": 1_000,
    "min_rounds": 100_000,
    "max_rounds": 100_000,
}
MAX_TOKENS = 1 << 24  # batch_size x seq_len: 16.8 million token ids, 128 MiB as int64 before any model
MAX_BUDGET_S = 86_400.0
MIN_ROUNDS = 2  # timed rounds however short the budget: both orders (baseline first, candidate first)


@dataclass(frozen=True, kw_only=True)
class LatencySettings(Settings):
    kind: ClassVar[str] = "latency"
    batch_size: int = 8
    seq_len: int = 128
    threads: int | None = None  # None: torch's current setting
    warmup: int = 3
    min_rounds: int = 10
    max_rounds: int = 300
    budget_s: float = 30.0
    target_rel_ci: float = 0.02

    def __post_init__(self) -> None:
        self.validate()  # also when built in Python, not only from a recipe or the CLI

    def validate(self) -> None:
        for name, top in LIMITS.items():
            value = getattr(self, name)
            if value is None:
                continue
            low = 0 if name == "warmup" else 1
            if not low <= value <= top:
                raise BadInput(f"latency: {name} must be between {low} and {top:,}, got {value:,}.")
        if self.batch_size * self.seq_len > MAX_TOKENS:
            raise BadInput(
                f"latency: a batch of {self.batch_size:,} x {self.seq_len:,} tokens is more than the "
                f"{MAX_TOKENS:,} a latency input may hold; lower --batch-size or --seq-len."
            )
        if self.min_rounds > self.max_rounds:
            raise BadInput(f"latency: min_rounds {self.min_rounds} is above max_rounds {self.max_rounds}.")
        if not 0 < self.budget_s <= MAX_BUDGET_S:
            raise BadInput(
                f"latency: the budget must be more than 0 and at most {MAX_BUDGET_S:,.0f} s, "
                f"got {self.budget_s:g}."
            )
        if not 0 < self.target_rel_ci < 1:
            raise BadInput(f"latency: target_rel_ci must be between 0 and 1, got {self.target_rel_ci:g}.")


@dataclass
class Runner:
    """One model ready to run on one device and runtime. `info` holds latency-row entries about it,
    keyed by row key ({"onnx": {...}}); the row shows each as {"baseline": ..., "candidate": ...}."""

    run: Callable[[], object]
    info: dict = field(default_factory=dict)
    close: Callable[[], None] = lambda: None


@dataclass
class Timing:
    samples_ms: list[float]

    @property
    def p50(self) -> float:
        return statistics.median(self.samples_ms)

    @property
    def p90(self) -> float:
        return _quantile(self.samples_ms, 0.9)

    @property
    def iqr(self) -> float:
        return _quantile(self.samples_ms, 0.75) - _quantile(self.samples_ms, 0.25)


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def median_ci(values: list[float]) -> tuple[float, float]:
    """Distribution-free 95% interval of the median (order statistics)."""
    ordered = sorted(values)
    n = len(ordered)
    half = 1.96 * math.sqrt(n) / 2
    lo = max(0, math.floor(n / 2 - half))
    hi = min(n - 1, math.ceil(n / 2 + half) - 1)
    return ordered[lo], ordered[hi]


def cpu_timer(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def cuda_timer(fn: Callable[[], object]) -> float:
    import torch

    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end)


@dataclass
class PairResult:
    baseline: Timing
    candidate: Timing
    rounds: int
    speedup_ci: tuple[float, float]
    warmup: int = 0  # warm-up pairs run (each model once)
    stopped_by: str = "converged"  # converged | budget | max_rounds
    seconds: float = 0.0  # warm-up and timed rounds together

    @property
    def speedup(self) -> float:
        return self.baseline.p50 / self.candidate.p50

    @property
    def budget_capped(self) -> bool:
        """True when the time budget ended the measurement before the interval was narrow enough."""
        return self.stopped_by == "budget"


def measure_pair(
    run_baseline: Callable[[], object],
    run_candidate: Callable[[], object],
    settings: LatencySettings,
    timer: Callable[[Callable[[], object]], float] = cpu_timer,
    progress=None,
    clock: Callable[[], float] = time.perf_counter,
) -> PairResult:
    """Warm-up pairs, then interleaved rounds, all within `settings.budget_s` (by `clock`).

    A round starts only when the mean round so far still fits before the deadline, and the warm-up
    leaves room for MIN_ROUNDS of them, so the budget is an upper bound. Only a single round longer
    than the whole budget goes past it: at least one warm-up pair and MIN_ROUNDS rounds always run.
    """
    started = clock()
    deadline = started + settings.budget_s
    warm = 0
    while warm < settings.warmup:
        pair_started = clock()
        run_baseline()
        run_candidate()
        warm += 1
        if clock() + (clock() - pair_started) * (1 + MIN_ROUNDS) > deadline:
            break  # another warm-up pair would eat into the timed rounds
    base: list[float] = []
    cand: list[float] = []
    ratios: list[float] = []
    stopped_by = "max_rounds"
    rounds_started = clock()
    if progress:
        progress.start("measuring latency", total=settings.max_rounds)
    for round_no in range(settings.max_rounds):
        if round_no % 2 == 0:
            b, c = timer(run_baseline), timer(run_candidate)
        else:
            c, b = timer(run_candidate), timer(run_baseline)
        base.append(b)
        cand.append(c)
        ratios.append(b / c if c > 0 else math.inf)
        if progress:
            progress.advance()
        if len(ratios) >= settings.min_rounds:
            lo, hi = median_ci(ratios)
            if (hi - lo) / 2 <= settings.target_rel_ci * statistics.median(ratios):
                stopped_by = "converged"
                break
        mean_round = (clock() - rounds_started) / len(ratios)
        if len(ratios) >= MIN_ROUNDS and clock() + mean_round > deadline:
            stopped_by = "budget"
            break
    if progress:
        progress.done()
    return PairResult(
        Timing(base),
        Timing(cand),
        len(ratios),
        median_ci(ratios),
        warmup=warm,
        stopped_by=stopped_by,
        seconds=clock() - started,
    )
