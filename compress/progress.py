"""Progress reporting without a UI dependency.

Library code calls a `Progress`; the CLI renders it as a rich progress bar on an interactive stderr,
a notebook (or a log) as plain text with no terminal escape codes (`TextProgress`), and tests or
`-q` as nothing.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Protocol, TextIO


class Progress(Protocol):
    def start(self, description: str, total: int | None = None) -> None: ...

    def advance(self, steps: int = 1) -> None: ...

    def done(self) -> None: ...


# Optional: `status(text)` shows a short line beside the bar (a training loss); callers check for it.


class NoProgress:
    """Reports nothing."""

    def start(self, description: str, total: int | None = None) -> None:
        pass

    def advance(self, steps: int = 1) -> None:
        pass

    def done(self) -> None:
        pass

    def status(self, text: str) -> None:
        pass


class TextProgress:
    """Plain text: one line per task, rewritten with a carriage return at most every `every_s`.

    Jupyter renders a carriage return by replacing the line, so a cell shows one updating line per
    step and the saved output stays readable; no ANSI codes, no widgets, nothing to install.
    """

    def __init__(self, stream: TextIO | None = None, every_s: float = 1.0):
        self._stream = stream
        self._every_s = every_s
        self._description: str | None = None

    def start(self, description: str, total: int | None = None) -> None:
        self.done()
        self._description, self._total, self._count, self._status = description, total, 0, ""
        self._started = self._shown = time.perf_counter()
        self._write(f"{description} …")

    def advance(self, steps: int = 1) -> None:
        if self._description is None:
            return
        self._count += steps
        now = time.perf_counter()
        if now - self._shown >= self._every_s:
            self._shown = now
            self._write(f"\r{self._description} {self._counter()} {self._status}".rstrip())

    def status(self, text: str) -> None:
        """A short line shown with the next update (e.g. a training loss)."""
        self._status = text

    def done(self) -> None:
        if self._description is None:
            return
        seconds = time.perf_counter() - self._started
        counter = self._counter()
        self._write(f"\r{self._description} {counter + ' ' if counter else ''}done in {seconds:.1f} s\n")
        self._description = None

    def _counter(self) -> str:
        if self._total:
            return f"{self._count}/{self._total}"
        return str(self._count) if self._count else ""

    def _write(self, text: str) -> None:
        stream = self._stream or sys.stderr  # looked up late: Jupyter replaces sys.stderr per cell
        stream.write(text)
        stream.flush()


def in_notebook() -> bool:
    """True inside a Jupyter (IPython kernel) session."""
    shell = sys.modules.get("IPython")
    get_ipython = getattr(shell, "get_ipython", None)
    return get_ipython is not None and type(get_ipython()).__name__ == "ZMQInteractiveShell"


def resolve(progress: Any) -> Any:
    """What the API's `progress=` argument means: True for plain text progress, False or None for
    none, or a Progress object used as given."""
    if progress is True:
        return TextProgress()
    if progress is False or progress is None:
        return None
    return progress
