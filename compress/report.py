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
from typing import Any

from compress.errors import BadInput
from compress.eval.tasks import AccuracyResult

SCHEMA = "compress.report/1"


@dataclass
class Report:
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
        if data["schema"] != SCHEMA:
            raise BadInput(f"{where}: has schema '{data['schema']}'; this compress reads '{SCHEMA}'.")
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        fields["accuracy"] = AccuracyResult(**data["accuracy"])
        return cls(**fields)

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
            for key in ("embedding_cosine_mean", "top1_agreement"):
                if key in a.details:
                    rows.append((key.replace("_", " "), "", _num(a.details[key], 4), ""))
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
                    _speed(row["speedup"]) + (f" (ideal {ideal:.2f}×)" if ideal else ""),
                )
            )
        return rows

    def structure_rows(self) -> list[tuple[str, str, str, str]]:
        """Sparsity, nonzero weights and FLOPs, when the evaluator measured them."""
        rows = []
        sp = self.sparsity
        if sp.get("layers"):
            rows.append(
                (
                    "sparsity (weights)",
                    f"{sp['baseline_overall']:.1%}",
                    f"{sp['overall']:.1%}",
                    f"{sp['nonzero_weights'] / max(sp['baseline_nonzero_weights'], 1):.3f}× nonzero weights",
                )
            )
        c = self.compute
        if c.get("flops"):
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


def _finite(value: Any) -> Any:
    """JSON has no inf/nan: write them as strings so the file stays valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


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
