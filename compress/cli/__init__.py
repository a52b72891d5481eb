"""The `compress` command line: a click group whose commands call the same API as Python users.

Commands are imported only when run (or listed), so `compress --help` stays fast.
"""

from __future__ import annotations

import importlib

import click

from compress._version import __version__

# command name -> "module:attribute"; one module per command.
COMMANDS = {
    "quantize": "compress.cli.quantize:quantize",
    "eval": "compress.cli.eval:eval_command",
    "prune": "compress.cli.prune:prune",
    "compare": "compress.cli.compare:compare_command",
    "run": "compress.cli.run:run_command",
    "gate": "compress.cli.gate:gate_command",
    "history": "compress.cli.history:history_command",
    "passes": "compress.cli.passes:passes_command",
    "distill": "compress.cli.distill:distill",
    "hardware": "compress.cli.hardware:hardware_command",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="compress")
def main() -> None:
    """compress: make models smaller and faster, and prove it (size, accuracy, latency)."""
