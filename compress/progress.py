"""Progress reporting without a UI dependency.

Library code calls a `Progress`; the CLI renders it as a rich progress bar on stderr, a notebook
as plain updating text, and tests or `-q` as nothing.
"""

from __future__ import annotations

from typing import Protocol


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
