"""`compress hardware`: what this machine accelerates, which runtimes can use it, and what compress
recommends for it."""

from __future__ import annotations

import json
from typing import Any

import click

from compress.cli.common import handle_errors, json_option, quiet_option, stderr, write_text


def _yes(flag: bool) -> str:
    return "[green]yes[/]" if flag else "[dim]no[/]"


def hardware_table(data: dict[str, Any]) -> Any:
    """A rich table of `Hardware.to_dict()`."""
    from rich.markup import escape
    from rich.table import Table

    from compress.hardware import ARM_FEATURES, ISA_CLASSES, X86_FEATURES

    cpu, cuda = data["cpu"], data["cuda"]
    table = Table(title="hardware", title_justify="left", show_header=False)
    table.add_column("item")
    table.add_column("value")
    table.add_row("CPU", f"{cpu['model']} ({cpu['vendor']}, {cpu['arch']})")
    table.add_row("ISA class", f"{cpu['isa_class']}: {ISA_CLASSES[cpu['isa_class']]}")
    labels = {**X86_FEATURES, **ARM_FEATURES}
    for name, present in cpu["features"].items():
        table.add_row(f"  {name}", f"{_yes(present)}  [dim]{labels[name]}[/]")
    cores = cpu["physical_cores"] if cpu["physical_cores"] is not None else "unknown"
    table.add_row("cores", f"{cores} physical, {cpu['logical_cpus']} logical (usable by this process)")
    memory = data["memory_gb"]
    table.add_row("memory", f"{memory} GiB" if memory is not None else "unknown")
    if cuda["available"]:
        for gpu in cuda["devices"]:
            table.add_row(
                "GPU", f"{gpu['name']} (compute capability {gpu['capability']}, {gpu['memory_gb']} GiB)"
            )
    else:
        table.add_row("GPU", f"none: {escape(str(cuda['reason']))}")
    for name, rt in data["runtimes"].items():
        if rt["available"]:
            devices = f" ({', '.join(rt['devices'])})" if rt["devices"] else ""
            table.add_row(name, f"{rt['version']}{devices}")
        else:
            table.add_row(name, f"[yellow]unavailable[/]: {escape(rt['reason'])}")
    return table


@click.command(name="hardware")
@json_option
@quiet_option
@handle_errors
def hardware_command(json_path: str | None, quiet: bool) -> None:
    """What this machine accelerates (CPU vector and matrix extensions: AVX2, AVX-512 VNNI, AMX,
    ARM dot product, I8MM, SVE), its cores and memory, CUDA devices, the runtimes compress can use
    (torch, ONNX Runtime, OpenVINO, NNCF), and the scheme, runtime and format compress recommends
    for it, with the measured figure behind the choice.

    \b
    compress hardware
    compress hardware --json -
    """
    from compress.hardware import detect
    from compress.recommend import recommend

    hw = detect()
    data = hw.to_dict()
    choice = recommend(hw)
    if not quiet:
        from rich.markup import escape

        stderr.print(hardware_table(data))
        stderr.print(f"[bold]recommended:[/] {escape(choice.reason)}", soft_wrap=True)
    if json_path:
        write_text(json_path, json.dumps({**data, "recommendation": choice.to_dict()}, indent=2) + "\n")
