"""Latency of a baseline and a candidate, measured interleaved so machine noise hits both alike.

Each round runs both models once, in alternating order. After a warm-up, rounds continue until the
95% confidence interval of the median per-round speedup is within `target_rel_ci` of it, or the
time budget or round limit is reached. Reported: p50, p90 and IQR of each, throughput, and the
speedup (baseline p50 / candidate p50), with its interval. On CUDA, time comes from CUDA events
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

    def validate(self) -> None:
        for name in ("batch_size", "seq_len", "min_rounds", "max_rounds"):
            if getattr(self, name) < 1:
                raise BadInput(f"latency: {name} must be at least 1, got {getattr(self, name)}.")
        if self.threads is not None and self.threads < 1:
            raise BadInput(f"latency: threads must be at least 1, got {self.threads}.")
        if self.budget_s <= 0 or self.warmup < 0:
            raise BadInput("latency: the budget must be positive and the warm-up not negative.")


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

    @property
    def speedup(self) -> float:
        return self.baseline.p50 / self.candidate.p50


def measure_pair(
    run_baseline: Callable[[], object],
    run_candidate: Callable[[], object],
    settings: LatencySettings,
    timer: Callable[[Callable[[], object]], float] = cpu_timer,
    progress=None,
) -> PairResult:
    for _ in range(settings.warmup):
        run_baseline()
        run_candidate()
    base: list[float] = []
    cand: list[float] = []
    ratios: list[float] = []
    started = time.perf_counter()
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
            mid = statistics.median(ratios)
            if (hi - lo) / 2 <= settings.target_rel_ci * mid:
                break
            if time.perf_counter() - started > settings.budget_s:
                break
    if progress:
        progress.done()
    return PairResult(Timing(base), Timing(cand), len(ratios), median_ci(ratios))
