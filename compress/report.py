"""Report: baseline beside candidate (size, accuracy, latency), as JSON, Markdown, HTML and plain metrics.

The JSON schema is versioned (`schema`); any change to its keys bumps the version. The README
documents every key.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from compress.errors import BadInput

if TYPE_CHECKING:  # imported lazily: compress.eval imports this module
    from compress.eval.tasks import AccuracyResult

SCHEMA = "compress.report/3"
# Versions this compress reads: each only adds keys to the one before (absent ones take their defaults).
# /3 added the latency rows' warmup_rounds, timing_s and budget_capped, and accuracy.details.max_length
# (with max_length_from) for every text task.
READABLE_SCHEMAS = ("compress.report/1", "compress.report/2", SCHEMA)


@dataclass
class Report:
    """Baseline beside candidate: size, accuracy and retention, latency rows, notes.

    Shown as a table in a notebook; `.to_markdown()`, `.to_json()`, `.metric("size.ratio")`.

    Example:
        >>> report = cz.evaluate("out/int8", baseline="model.safetensors")   # doctest: +SKIP
        >>> report.metric("accuracy.retention"), report.metric("latency.cpu.speedup")  # doctest: +SKIP
        >>> cz.Report.load("int8.json").to_markdown()                       # doctest: +SKIP
    """

    candidate: dict
    baseline: dict
    size: dict
    accuracy: AccuracyResult
    latency: list[dict] = field(default_factory=list)
    tensors: list[dict] = field(default_factory=list)
    sparsity: dict = field(default_factory=dict)  # overall and per layer (see eval/structure.py)
    compute: dict = field(default_factory=dict)  # FLOPs on the latency input, ideal speedup
    distillation: dict = field(default_factory=dict)  # teacher, data, steps, retention before/after
    environment: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    created: str = field(
        default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    )
    schema: str = SCHEMA

    # ---- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict:
        out = asdict(self)
        out["tensor_summary"] = self.tensor_summary()
        return _finite(out)

    def to_json(self, indent: int = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=False)

    @classmethod
    def from_dict(cls, data: dict, where: str = "report") -> Report:
        if not isinstance(data, dict) or "schema" not in data:
            raise BadInput(f"{where}: is not a compress report (no 'schema' key).")
        if data["schema"] not in READABLE_SCHEMAS:
            raise BadInput(
                f"{where}: has schema '{data['schema']}'; this compress reads {', '.join(READABLE_SCHEMAS)}."
            )
        from compress.eval.tasks import AccuracyResult

        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        fields["schema"] = SCHEMA  # loaded, it has every key of the current version
        try:
            fields["accuracy"] = AccuracyResult(**data["accuracy"])
            return cls(**fields)
        except (KeyError, TypeError) as exc:
            raise BadInput(
                f"{where}: is not a complete {SCHEMA} report ({type(exc).__name__}: {exc})."
            ) from None

    @classmethod
    def load(cls, path) -> Report:
        from pathlib import Path

        p = Path(path)
        try:
            data = json.loads(p.read_text())
        except FileNotFoundError:
            raise BadInput(f"{p}: no such report file.") from None
        except (OSError, json.JSONDecodeError) as exc:
            raise BadInput(f"{p}: is not a JSON report ({exc}).") from None
        return cls.from_dict(data, str(p))

    # ---- metrics -------------------------------------------------------------------------------
    def tensor_summary(self) -> dict:
        values = [float(t["sqnr_db"]) for t in self.tensors if t.get("sqnr_db") is not None]
        if not values:
            return {}
        return {"count": len(values), "sqnr_db_min": min(values), "sqnr_db_mean": sum(values) / len(values)}

    def latency_row(self, device: str, runtime: str | None = None) -> dict | None:
        """The measured row for a device (and runtime; the first measured one when not given)."""
        for row in self.latency:
            if (
                row["device"] == device
                and row["status"] == "ok"
                and (runtime is None or row["runtime"] == runtime)
            ):
                return row
        return None

    def metric(self, path: str) -> Any:
        """A value by dotted path: 'accuracy.retention', 'size.ratio', 'latency.cpu.speedup',
        'latency.cpu.onnxruntime.p50_ms'. None when the report does not have it."""
        parts = path.split(".")
        if parts[0] == "latency" and len(parts) in (3, 4):
            row = self.latency_row(parts[1], parts[2] if len(parts) == 4 else None)
            return None if row is None else row.get(parts[-1])
        node: Any = self.to_dict()
        for part in parts:
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node

    def metric_paths(self) -> list[str]:
        """Every dotted path with a numeric value in this report: what a gate rule may name."""
        data = self.to_dict()
        for key in ("latency", "tensors", "environment", "schema", "created"):
            data.pop(key, None)
        paths = [p for p, v in _flatten(data) if is_number(v)]
        for row in self.latency:
            if row["status"] != "ok":
                continue
            for key, value in row.items():
                if is_number(value):
                    short = f"latency.{row['device']}.{key}"
                    if self.latency_row(row["device"]) is row:
                        paths.append(short)
                    paths.append(f"latency.{row['device']}.{row['runtime']}.{key}")
        return paths

    def unavailable_reason(self, path: str) -> str | None:
        """Why the report has no value at `path`, when it records why (an unavailable measurement)."""
        parts = path.split(".")
        if parts[0] == "accuracy" and self.accuracy.status != "ok":
            return f"accuracy is unavailable: {self.accuracy.reason}"
        if parts[0] == "latency" and len(parts) in (3, 4):
            for row in self.latency:
                runtime_ok = len(parts) == 3 or row["runtime"] == parts[2]
                if row["device"] == parts[1] and runtime_ok and row["status"] != "ok":
                    return f"latency {row['device']}/{row['runtime']} is unavailable: {row.get('reason')}"
        return None

    # ---- presentation --------------------------------------------------------------------------
    def headline_rows(self) -> list[tuple[str, str, str, str]]:
        """(what, baseline, candidate, change) rows shared by the rich table, Markdown and HTML."""
        rows = []
        s = self.size
        rows.append(("size", _mb(s.get("baseline_bytes")), _mb(s.get("bytes")), _ratio(s.get("ratio"))))
        if s.get("bits_per_weight") is not None:
            rows.append(
                (
                    "bits per weight",
                    _num(s.get("baseline_bits_per_weight"), 2),
                    _num(s.get("bits_per_weight"), 2),
                    "",
                )
            )
        rows += self.structure_rows()
        a = self.accuracy
        if a.status == "ok":
            rows.append(
                (
                    f"{a.task}: {a.metric}",
                    _num(a.baseline, 4),
                    _num(a.value, 4),
                    f"retention {_num(a.retention, 4)}",
                )
            )
            if "macro_f1" in a.details:
                rows.append(
                    (
                        "macro F1",
                        _num(a.details.get("baseline_macro_f1"), 4),
                        _num(a.details["macro_f1"], 4),
                        "",
                    )
                )
            for key in (
                "embedding_cosine_mean",
                "top1_agreement",
                "prediction_agreement",
                "pairwise_spearman",
            ):
                if key in a.details:
                    rows.append((key.replace("_", " "), "", _num(a.details[key], 4), ""))
            if a.metric == "spearman" and "cosine_mean" in a.details:
                rows.append(("embedding cosine mean", "", _num(a.details["cosine_mean"], 4), ""))
            rows += _by_runtime(a)
        else:
            rows.append(("accuracy", "", "unavailable", a.reason or ""))
        rows += self.distillation_rows()
        summary = self.tensor_summary()
        if summary:
            rows.append(
                (
                    "weight SQNR dB min/mean",
                    "",
                    f"{_num(summary['sqnr_db_min'], 1)} / {_num(summary['sqnr_db_mean'], 1)}",
                    f"{summary['count']} tensors",
                )
            )
        for row in self.latency:
            label = f"latency {row['device']}/{row['runtime']}"
            if row["status"] != "ok":
                rows.append((label, "", "unavailable", row.get("reason") or ""))
                continue
            shape = f" b{row['batch_size']}×{row['seq_len']}" if row.get("seq_len") else ""
            ideal = row.get("ideal_speedup")
            rows.append(
                (
                    label + shape + " p50",
                    f"{_num(row['baseline_p50_ms'], 2)} ms",
                    f"{_num(row['p50_ms'], 2)} ms",
                    _speed(row["speedup"]) + _ideal(ideal) + _integer_kernels(row),
                )
            )
            memory = _memory_row(row)
            if memory:
                rows.append(memory)
        return rows

    def structure_rows(self) -> list[tuple[str, str, str, str]]:
        """Sparsity and FLOPs when they changed beyond what rounding does (quantization zeros a few
        small weights and keeps FLOPs)."""
        from compress.eval.structure import NOTABLE_SPARSITY

        rows = []
        sp = self.sparsity
        if sp.get("layers") and sp["overall"] - sp["baseline_overall"] >= NOTABLE_SPARSITY:
            rows.append(
                (
                    "sparsity (weights)",
                    f"{sp['baseline_overall']:.1%}",
                    f"{sp['overall']:.1%}",
                    f"{sp['nonzero_weights'] / max(sp['baseline_nonzero_weights'], 1):.3f}× nonzero weights",
                )
            )
        c = self.compute
        if c.get("flops") and c["flops"] != c["baseline_flops"]:
            rows.append(
                (
                    "FLOPs per call",
                    _flops(c["baseline_flops"]),
                    _flops(c["flops"]),
                    f"ideal speedup {c['ideal_speedup']:.2f}×",
                )
            )
        return rows

    def distillation_rows(self) -> list[tuple[str, str, str, str]]:
        """The student before distillation, and the training run, when this is a distilled model."""
        d = self.distillation
        if not d:
            return []
        rows = []
        before = d.get("accuracy_before")
        if before and before.get("value") is not None:
            rows.append(
                (
                    "before distillation",
                    _num(before["baseline"], 4),
                    _num(before["value"], 4),
                    f"retention {_num(before['retention'], 4)}",
                )
            )
        history = d.get("validation") or []
        if history:
            rows.append(
                (
                    f"distillation: validation {d.get('validation_metric', '')}",
                    _num(history[0].get("teacher"), 4),
                    f"{_num(history[0]['retention'], 4)} → {_num(self._best_retention(), 4)}",
                    f"{d.get('steps')} steps, best at {d.get('best_step')}",
                )
            )
        return rows

    def _best_retention(self) -> float | None:
        history = self.distillation.get("validation") or []
        best = self.distillation.get("best_step")
        return next((h["retention"] for h in history if h["step"] == best), None)

    def to_markdown(self) -> str:
        lines = [
            f"### compress report: {self.candidate.get('name')} vs {self.baseline.get('name')}",
            "",
            "| | baseline | candidate | change |",
            "|---|---:|---:|---|",
        ]
        lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in self.headline_rows()]
        if self.notes:
            lines += ["", *[f"- {n}" for n in self.notes]]
        env = self.environment
        lines += [
            "",
            f"<sub>{env.get('cpu', '')}, {env.get('threads')} threads; "
            f"torch {env.get('versions', {}).get('torch')}; {self.created}</sub>",
        ]
        return "\n".join(lines) + "\n"

    def _repr_html_(self) -> str:
        cells = "".join(
            "<tr>" + "".join(f"<td>{html.escape(str(x))}</td>" for x in row) + "</tr>"
            for row in self.headline_rows()
        )
        notes = "".join(f"<li>{html.escape(n)}</li>" for n in self.notes)
        title = html.escape(f"{self.candidate.get('name')} vs {self.baseline.get('name')}")
        return (
            f"<div><b>compress report: {title}</b><table><thead><tr><th></th><th>baseline</th>"
            f"<th>candidate</th><th>change</th></tr></thead><tbody>{cells}</tbody></table>"
            + (f"<ul>{notes}</ul>" if notes else "")
            + "</div>"
        )


def is_number(value: Any) -> bool:
    """A metric value a rule can compare: a real number, or the strings JSON uses for inf and nan."""
    if isinstance(value, bool):
        return False
    return isinstance(value, int | float) or value in ("inf", "-inf", "nan")


def _flatten(node: Any, prefix: str = ""):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _flatten(value, f"{prefix}.{key}" if prefix else str(key))
    else:
        yield prefix, node


def _ideal(ideal: float | None) -> str:
    """The FLOPs-ideal speedup beside a measured one, when structure changed the FLOPs."""
    return f" (ideal {ideal:.2f}×)" if ideal and abs(ideal - 1) >= 0.005 else ""


def _integer_kernels(row: dict) -> str:
    """The torch integer kernels a quantized candidate ran (compress.kernels), when any did, or the
    precisions of its matrix products on OpenVINO (compress.openvino.precisions)."""
    from compress.kernels import DEQUANTIZE

    used = {name: n for name, n in (row.get("torch_kernels") or {}).items() if name != DEQUANTIZE}
    used |= (row.get("openvino_precisions") or {}).get("candidate") or {}
    return "; " + ", ".join(f"{name} ×{n}" for name, n in used.items()) if used else ""


def _by_runtime(a: AccuracyResult) -> list[tuple[str, str, str, str]]:
    """The accuracy task scored through another runtime (accuracy.details.by_runtime)."""
    rows = []
    for runtime, score in (a.details.get("by_runtime") or {}).items():
        if score.get("status") == "ok":
            retention = f"retention {_num(score.get('retention'), 4)}"
            rows.append(
                (f"  on {runtime}", _num(score.get("baseline"), 4), _num(score.get("value"), 4), retention)
            )
        else:
            rows.append((f"  on {runtime}", "", "unavailable", score.get("reason") or ""))
    return rows


def _finite(value: Any) -> Any:
    """JSON has no inf/nan: write them as strings so the file stays valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _memory_row(row: dict) -> tuple[str, str, str, str] | None:
    """Peak memory of one call of each model (RSS, or CUDA max allocated) beside a latency row."""
    for key, what in (("cuda_max_allocated_mb", "CUDA max allocated"), ("peak_rss_mb", "peak RSS (call)")):
        if row.get(key) is None:
            continue
        if key == "cuda_max_allocated_mb":
            return (f"  {what}", f"{row[f'baseline_{key}']:.0f} MB", f"{row[key]:.0f} MB", "")

        def cell(prefix: str) -> str:
            call = row.get(f"{prefix}call_rss_mb")
            return f"{row[f'{prefix}peak_rss_mb']:.0f} MB" + (f" (+{call:.0f})" if call is not None else "")

        return (f"  {what}", cell("baseline_"), cell(""), "")
    return None


def _mb(n: int | None) -> str:
    return "" if n is None else f"{n / 1e6:.2f} MB"


def _num(x: float | None, digits: int) -> str:
    if x is None:
        return ""
    if isinstance(x, str):
        return x
    return f"{x:.{digits}f}"


def _flops(n: int) -> str:
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return str(n)


def _ratio(x: float | None) -> str:
    return "" if x is None else f"×{x:.3f}"


def _speed(x: float | None) -> str:
    if x is None:
        return ""
    return f"{x:.2f}× faster" if x >= 1 else f"{1 / x:.2f}× slower"
