"""The report's `generation` rows as metrics and as table rows (compress.report shows and gates them).

Metric paths (what `Report.metric` and gate rules accept):

    generation.<device>.<key>                   the first measured row on the device
    generation.<device>.<runtime>.<key>         the first measured row of that runtime (smallest batch)
    generation.<device>.<runtime>.b<N>.<key>    the row of batch size N
    latency.<device>[.<runtime>].<key>          the same as generation.<device>[.<runtime>].<key>, for
                                                the keys only generation rows have (ALIASED_KEYS)

e.g. generation.cpu.torch.decode_speedup, latency.cpu.decode_speedup, generation.cpu.torch.b8.ttft_speedup.
"""

from __future__ import annotations

from typing import Any

# Keys of a generation row that `latency.<device>...` paths reach too (latency rows have none of them).
ALIASED_KEYS = (
    "ttft_speedup",
    "decode_speedup",
    "greedy_agreement",
    "common_prefix_mean",
    "common_prefix_min",
)
# Absolute measurements: they differ between machines and runs, so gate rules use the ratios instead.
ABSOLUTE_SUFFIXES = ("_ms", "throughput", "tokens_per_s", "tokens_per_s_iqr")
HIGHER_IS_BETTER = {key: True for key in ALIASED_KEYS}


def find_row(
    rows: list[dict], device: str, runtime: str | None = None, batch: int | None = None
) -> dict | None:
    """The measured row for a device (and runtime, and batch size); the first such when not given."""
    for row in rows:
        if (
            row["device"] == device
            and row["status"] == "ok"
            and (runtime is None or row["runtime"] == runtime)
            and (batch is None or row.get("batch_size") == batch)
        ):
            return row
    return None


def _batch(part: str) -> int | None:
    return int(part[1:]) if len(part) > 1 and part[0] == "b" and part[1:].isdigit() else None


def _address(parts: list[str]) -> tuple[str, str | None, int | None] | None:
    """(device, runtime, batch) a path names, or None when it is not a generation path."""
    head, middle = parts[0], parts[1:-1]
    if head == "latency" and (parts[-1] not in ALIASED_KEYS or len(middle) not in (1, 2)):
        return None
    if head not in ("generation", "latency") or not 1 <= len(middle) <= 3:
        return None
    if len(middle) == 3:
        batch = _batch(middle[2])
        return (middle[0], middle[1], batch) if batch is not None else None
    return middle[0], middle[1] if len(middle) == 2 else None, None


def is_generation_path(path: str) -> bool:
    return _address(path.split(".")) is not None


def metric(rows: list[dict], path: str) -> Any:
    """The value at a generation metric path; None when the report has no such measured value."""
    parts = path.split(".")
    address = _address(parts)
    if address is None:
        return None
    row = find_row(rows, *address)
    return None if row is None else row.get(parts[-1])


def unavailable_reason(rows: list[dict], path: str) -> str | None:
    """Why a generation path has no value, when an unavailable row says why."""
    address = _address(path.split("."))
    if address is None:
        return None
    device, runtime, batch = address
    for row in rows:
        if (
            row["device"] == device
            and (runtime is None or row["runtime"] == runtime)
            and (batch is None or row.get("batch_size") in (batch, None))
            and row["status"] != "ok"
        ):
            return f"generation {row['device']}/{row['runtime']} is unavailable: {row.get('reason')}"
    return None


def metric_paths(rows: list[dict], is_number) -> list[str]:
    """Every generation metric path with a numeric value."""
    paths = []
    for row in rows:
        if row["status"] != "ok":
            continue
        device, runtime = row["device"], row["runtime"]
        first_of_device = find_row(rows, device) is row
        first_of_runtime = find_row(rows, device, runtime) is row
        for key, value in row.items():
            if not is_number(value) or key == "batch_size":
                continue
            if first_of_device:
                paths.append(f"generation.{device}.{key}")
                if key in ALIASED_KEYS:
                    paths.append(f"latency.{device}.{key}")
            if first_of_runtime:
                paths.append(f"generation.{device}.{runtime}.{key}")
            paths.append(f"generation.{device}.{runtime}.b{row['batch_size']}.{key}")
    return paths


def headline_rows(rows: list[dict], speed, memory_row) -> list[tuple[str, str, str, str]]:
    """(what, baseline, candidate, change) table rows: time to first token, decode rate, memory and
    greedy agreement; `speed` and `memory_row` are the report's formatters."""
    out = []
    agreed: set[tuple[str, str]] = set()
    for row in rows:
        label = f"generate {row['device']}/{row['runtime']}"
        if row["status"] != "ok":
            batch = f" b{row['batch_size']}" if row.get("batch_size") else ""
            out.append((label + batch, "", "unavailable", row.get("reason") or ""))
            continue
        label += f" b{row['batch_size']} ({row['prompt_tokens']}+{row['new_tokens']} tokens)"
        out.append(
            (
                f"{label} first token",
                f"{row['baseline_ttft_ms']:.1f} ms",
                f"{row['ttft_ms']:.1f} ms",
                speed(row["ttft_speedup"]),
            )
        )
        out.append(
            (
                "  decode",
                f"{row['baseline_decode_tokens_per_s']:.1f} tokens/s",
                f"{row['decode_tokens_per_s']:.1f} tokens/s",
                speed(row["decode_speedup"]) + f" ({row['rounds']} round{'s' * (row['rounds'] != 1)})",
            )
        )
        memory = memory_row(row)
        if memory:
            out.append(memory)
        key = (row["device"], row["runtime"])
        if "greedy_agreement" in row and key not in agreed:
            agreed.add(key)
            prefix = f"common prefix {row['common_prefix_mean']:.1f} of {row['agreement_tokens']} (min "
            out.append(
                (
                    "  greedy agreement",
                    "",
                    f"{row['greedy_agreement']:.3f}",
                    prefix + f"{row['common_prefix_min']}), {row['agreement_prompts']} prompts",
                )
            )
    return out
