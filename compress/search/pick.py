"""Choosing among a search's trials, and the gate a chosen trial's recipe carries into CI.

The constraints of a choice are gate rules (compress.gate): a trial qualifies when its report passes
them, exactly as `compress gate` would judge it; among those, the best by size, retention or speed
wins, ordered as `Sweep.best` orders them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from compress.errors import BadInput
from compress.sweep import PREFER


def constraint_rules(
    floor: float, max_size_ratio: float | None, min_speedup: float | None, latency: tuple[str, str]
) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = [{"metric": "accuracy.retention", "min": floor}]
    if max_size_ratio is not None:
        rules.append({"metric": "size.ratio", "max": max_size_ratio})
    if min_speedup is not None:
        rules.append({"metric": f"latency.{latency[0]}.{latency[1]}.speedup", "min": min_speedup})
    return rules


def choose(
    trials: Sequence[Any],
    floor: float,
    max_size_ratio: float | None,
    min_speedup: float | None,
    prefer: str,
    latency: tuple[str, str],
) -> Any:
    """The trial whose report passes the constraints' gate rules and is best by `prefer`."""
    from compress.gate import gate

    if prefer not in PREFER:
        raise BadInput(f"pick: prefer must be one of {', '.join(PREFER)}, got '{prefer}'.")
    rules = constraint_rules(floor, max_size_ratio, min_speedup, latency)
    fits, misses = [], []
    for trial in trials:
        try:
            verdict = gate(trial.report, rules)
        except BadInput as exc:  # a metric the trial's report does not have
            misses.append(f"{trial.name}: {exc}")
            continue
        if verdict.passed:
            fits.append(trial)
        else:
            misses.append(f"{trial.name}: " + "; ".join(c.reason for c in verdict.failures))
    if not fits:
        asked = ", ".join(
            f"{r['metric']} {'>=' if 'min' in r else '<='} {r.get('min', r.get('max'))}" for r in rules
        )
        shown = "; ".join(misses[:6]) + (f"; and {len(misses) - 6} more" if len(misses) > 6 else "")
        raise BadInput(
            f"pick: no finished trial of the search meets {asked} ({shown or 'no trial finished'})."
        )
    return min(fits, key=lambda t: _order(t.report, prefer, latency))


def _order(report: Any, prefer: str, latency: tuple[str, str]) -> tuple:
    size = _or(report.size.get("ratio"), 1e9)
    retention = _or(report.accuracy.retention, -1e9)
    row = report.latency_row(*latency)
    speed = _or(row["speedup"] if row else None, -1e9)
    if prefer == "size":
        return (size, -retention)
    if prefer == "retention":
        return (-retention, size)
    return (-speed, -retention)


def ci_rules(
    report: Any, floor: float, latency: tuple[str, str], min_speedup: float | None = None
) -> list[dict[str, Any]]:
    """Gate rules for CI from a chosen trial's report: the retention floor and no regression beyond
    0.005, the size ratio it reached (rounded up to 0.01: sizes are exact), and on the search's
    runtime a speedup of at least `min_speedup`, else 80% of the one measured (rounded down to 0.05:
    a shared CI machine is noisy, the rule catches a large slowdown)."""
    rules: list[dict[str, Any]] = [
        {"metric": "accuracy.retention", "min": floor},
        {"metric": "accuracy.retention", "max_regression": 0.005},
    ]
    ratio = report.size.get("ratio")
    if ratio is not None:
        rules.append({"metric": "size.ratio", "max": math.ceil(ratio * 100) / 100})
    row = report.latency_row(*latency)
    if row is not None:
        bound = min_speedup if min_speedup is not None else math.floor(0.8 * row["speedup"] * 20) / 20
        if bound > 0:
            rules.append({"metric": f"latency.{latency[0]}.{latency[1]}.speedup", "min": bound})
    return rules


def describe_passes(recipe: Any) -> str:
    """A short line for a trial's passes: 'neurons 30% > distill 40 steps > int4 hqq g64 asym, emb int8'."""
    if recipe is None:
        return ""
    parts = []
    for cfg in recipe.passes:
        if cfg.kind == "prune":
            parts.append(f"{cfg.pattern} {cfg.fraction:.0%}")
        elif cfg.kind == "distill":
            t = cfg.training
            parts.append(f"distill {t.max_steps} steps" if t.max_steps else f"distill {t.epochs} epochs")
        elif cfg.kind == "quantize":
            parts.append(_quantize(cfg))
        else:
            parts.append(cfg.kind)
    return " > ".join(parts)


def _quantize(cfg: Any) -> str:
    targets = cfg.targets
    if targets.types == ("embedding",):
        return f"emb {cfg.scheme}"
    if cfg.scheme == "int8":
        text = (
            "int8"
            + {"none": "", "dynamic": " dynamic", "static": " static"}[getattr(cfg, "activations", "none")]
        )
        alpha = getattr(cfg, "smooth_alpha", None)
        text += "" if alpha is None else f" sq{alpha:g}" if isinstance(alpha, float) else f" sq {alpha}"
    elif cfg.scheme == "int4":
        text = f"int4 {cfg.method} g{cfg.group_size}{'' if cfg.symmetric else ' asym'}"
    else:  # 16-bit
        text = cfg.scheme
    kept = len(getattr(cfg, "keep_int8", ()) or ())
    if kept:
        text += f" ({kept} layers int8)"
    if targets.exclude:
        text += f" ({len(targets.exclude)} layers float)"
    if "embedding" in targets.types:
        text += " +emb"
    return text


def _or(x: float | None, default: float) -> float:
    return default if x is None else x
