"""A search's outcome as Markdown and as JSON (front.md, front.json, `compress search --json`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

SCHEMA = "compress.search/1"


def as_dict(result: Any) -> dict[str, Any]:
    s = result.settings
    counts = result.counts()
    wall = result.wall_seconds()
    done = counts.get("complete", 0) + counts.get("failed", 0)
    table = result.table()
    front = {r["trial"] for r in result.front()}
    return {
        "schema": SCHEMA,
        "model": s["model"],
        "model_sha256": s["model_sha256"],
        "space": s.get("space_file"),
        "objective": s["objective"],
        "min_retention": s["min_retention"],
        "latency": "/".join(result.latency),
        "evaluation": s["evaluation"],
        "counts": counts,
        "wall_s": round(wall, 3),
        "trials_per_minute": round(done / (wall / 60), 3) if wall else None,
        "front": [r for r in table if r["trial"] in front],
        "trials": table,
        "failed": [
            {"trial": t.number, "name": t.name, "state": t.state, "error": t.error, "attempts": t.attempts}
            for t in result.trials
            if t.state in ("failed", "interrupted")
        ],
        "duplicates": [
            {"trial": t.number, "name": t.name, "of": t.duplicate_of}
            for t in result.trials
            if t.state == "duplicate"
        ],
        "notes": list(result.notes),
    }


def as_markdown(result: Any) -> str:
    d = as_dict(result)
    model = Path(d["model"]).parent.name
    counts = ", ".join(f"{n} {state}" for state, n in d["counts"].items())
    rate = f"; {d['trials_per_minute']:.2f} trials per minute" if d["trials_per_minute"] else ""
    lines = [
        f"## compress search: {model}, objective {d['objective']}, retention >= {d['min_retention']:g}",
        "",
        f"{len(result.trials)} trials ({counts}); wall time {d['wall_s']:.0f} s{rate}. Speed: "
        f"{d['latency']}. Space: {d['space']}.",
        "",
        "### Pareto front (trials that keep the floor, beaten by no other on retention and size or speed)",
        "",
        *_rows(d["front"]),
        "",
        "### Every finished trial",
        "",
        *_rows(d["trials"], every=True),
    ]
    if d["failed"]:
        lines += ["", "### Failed trials", ""]
        lines += [
            f"- #{f['trial']} {f['name']} ({f['state']}, {f['attempts']} attempts): {f['error']}"
            for f in d["failed"]
        ]
    if d["duplicates"]:
        lines += ["", "### Points not run again (an earlier trial ran the same recipe)", ""]
        lines += [f"- #{x['trial']} {x['name']}: the recipe of #{x['of']}" for x in d["duplicates"]]
    if d["notes"]:
        lines += ["", *[f"- {n}" for n in d["notes"]]]
    return "\n".join(lines) + "\n"


def _rows(rows: list[dict[str, Any]], every: bool = False) -> list[str]:
    if not rows:
        return ["(none)"]
    head = "| # | trial | passes | size MB | size ratio | retention | speedup |"
    rule = "|---:|---|---|---:|---:|---:|---:|"
    if every:
        head += " keeps floor | front | s |"
        rule += "---|---|---:|"
    out = [head, rule]
    for r in rows:
        cells = [
            str(r["trial"]),
            r["name"],
            r["passes"],
            _f(r["size_mb"], 2),
            _f(r["size_ratio"], 4),
            _f(r["retention"], 4),
            _f(r["speedup"], 3),
        ]
        if every:
            fronts = [n for n, k in (("size", "front_size"), ("speed", "front_speed")) if r[k]]
            cells += ["yes" if r["keeps_floor"] else "no", " and ".join(fronts), _f(r["seconds"], 1)]
        out.append("| " + " | ".join(cells) + " |")
    return out


def _f(x: float | None, digits: int) -> str:
    return "" if x is None else f"{x:.{digits}f}"
