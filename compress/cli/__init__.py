"""The `compress` command line: a click group whose commands call the same API as Python users.

Commands are imported only when run (or listed), so `compress --help` stays fast.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

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
    "sweep": "compress.cli.sweep:sweep_command",
    "search": "compress.cli.search:search_command",
    "hardware": "compress.cli.hardware:hardware_command",
}


class LazyGroup(click.Group):
    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        """As click's, but a usage error (an unknown option, a bad choice) is one line on stderr,
        like every other bad input, with exit code 2."""
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except click.exceptions.NoArgsIsHelpError as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.UsageError as exc:
            command = exc.ctx.command_path if exc.ctx else "compress"
            click.echo(f"error: {exc.format_message()} (see '{command} --help')", err=True)
            sys.exit(exc.exit_code)
        except click.exceptions.Abort:
            click.echo("interrupted: nothing partial was left behind.", err=True)
            sys.exit(130)
        sys.exit(code if isinstance(code, int) else 0)  # as click's standalone mode ends

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
