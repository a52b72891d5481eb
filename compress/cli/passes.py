"""`compress passes`: the installed passes (built-in and plug-ins), their settings, whether they need data."""

from __future__ import annotations

import dataclasses
import json
import typing
from typing import Any, Literal, get_args, get_origin

import click

from compress.cli.common import handle_errors, write_text


def describe_type(hint: Any) -> str:
    origin, args = get_origin(hint), get_args(hint)
    if origin is Literal:
        return " | ".join(str(a) for a in args)
    if origin is tuple:
        return f"list of {describe_type(args[0])}" if args else "list"
    if args and type(None) in args:
        inner = [describe_type(a) for a in args if a is not type(None)]
        return " | ".join(inner) + " | null"
    return getattr(hint, "__name__", str(hint))


def describe_settings(cls: type, prefix: str = "", defaults: Any = None) -> list[dict[str, Any]]:
    """Every setting of a settings dataclass, nested ones flattened ('targets.include'); `defaults`:
    the instance whose values are the defaults (a nested setting's default made by its owner)."""
    from compress.config import Settings

    hints = typing.get_type_hints(cls)
    rows = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        hint = hints[f.name]
        if isinstance(hint, type) and issubclass(hint, Settings):
            made = f.default_factory() if f.default_factory is not dataclasses.MISSING else None
            rows += describe_settings(hint, f"{prefix}{f.name}.", made)
            continue
        if defaults is not None:
            default = getattr(defaults, f.name)
        elif f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = None
        rows.append(
            {
                "name": prefix + f.name,
                "type": describe_type(hint),
                "default": list(default) if isinstance(default, tuple) else default,
            }
        )
    return rows


def pass_listing() -> dict[str, Any]:
    from importlib.metadata import entry_points

    from compress.exporters import available_formats, get_exporter
    from compress.registry import ENTRY_POINT_GROUP, available_passes, broken_passes

    origin = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(ep, "dist", None)
        origin[ep.name] = dist.name if dist is not None else "unknown"
    passes = []
    for kind, spec in sorted(available_passes().items()):
        passes.append(
            {
                "kind": kind,
                "summary": spec.summary,
                "needs_data": spec.needs_data,
                "data": spec.data_kind,
                "package": origin.get(kind, "unknown"),
                "builtin": origin.get(kind) == "compress",
                "requires": list(spec.requires),
                "streams": spec.stream is not None,
                "settings": describe_settings(spec.config),
                "methods": [_method(cls) for cls in getattr(spec.config, "METHOD_CLASSES", ())],
            }
        )
    broken = [
        {"kind": b.kind, "target": b.target, "package": origin.get(b.kind, "unknown"), "reason": b.reason}
        for b in broken_passes().values()
    ]
    exports = []
    for fmt in available_formats():
        spec = get_exporter(fmt)
        exports.append({"format": fmt, "summary": spec.summary, "settings": describe_settings(spec.config)})
    return {"passes": passes, "broken": broken, "exports": exports}


def _method(cls: type) -> dict[str, Any]:
    """One settings class of a pass with several (quantize: one per method), with its real defaults."""
    return {"label": cls.label, "data": cls.data_use, "settings": describe_settings(cls)}


@click.command(name="passes")
@click.option("--json", "json_path", metavar="PATH", help="Write the list as JSON to PATH ('-' for stdout).")
@handle_errors
def passes_command(json_path: str | None) -> None:
    """List the installed passes, built-in and plug-in (entry-point group compress.passes), with
    their settings and defaults and the data they need, and the export formats. Plug-ins that fail
    to load are listed with the reason."""
    from rich.console import Console

    listing = pass_listing()
    if json_path:
        write_text(json_path, json.dumps(listing, indent=2, default=str) + "\n")
        if json_path == "-":
            return
    out = Console(highlight=False)
    for p in listing["passes"]:
        origin = "built-in" if p["builtin"] else f"plug-in from {p['package']}"
        if p["data"] == "training":
            data = "needs training data (its data setting)"
        else:
            data = "needs calibration data" if p["needs_data"] else "needs no data"
        if p["methods"]:
            out.print(f"[bold]{p['kind']}[/]: {p['summary']} ({origin})", soft_wrap=True)
            for m in p["methods"]:
                out.print(_table(f"{p['kind']}, {m['label']} (data: {m['data']})", m["settings"]))
        else:
            out.print(_table(f"{p['kind']}: {p['summary']} ({origin}; {data})", p["settings"]))
    for e in listing["exports"]:
        out.print(_table(f"export {e['format']}: {e['summary']}", e["settings"]))
    for b in listing["broken"]:
        out.print(
            f"[bold red]broken plug-in[/] {b['kind']} ({b['target']}, from {b['package']}): {b['reason']}",
            soft_wrap=True,
        )


def _table(title: str, settings: list[dict[str, Any]]):
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for column in ("setting", "type", "default"):
        table.add_column(column)
    for s in settings:
        table.add_row(s["name"], s["type"], json.dumps(s["default"]))
    return table
