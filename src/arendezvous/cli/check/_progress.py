"""What a check shows while it runs: the counters clients update, and their display on stderr."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TextIO

import anyio

from ...testing.history import Outcome
from ._options import Faults

__all__ = ("Display", "Progress")


@dataclass
class Progress:
    """Counters the clients update and the display reads."""

    total: int
    faults: Faults
    started: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    kills: int = 0
    server_down: bool = False

    def invoked(self) -> None:
        """One more operation started."""
        self.started += 1

    def completed(self, outcome: Outcome, error: BaseException | str | None) -> None:
        """An operation ended with *outcome*, and *error* (or its type's name) if it raised."""
        self.outcomes[outcome] += 1
        if error is not None:
            self.errors[error if isinstance(error, str) else type(error).__name__] += 1

    def line(self, elapsed: float) -> str:
        """The progress line after *elapsed* seconds."""
        text = (
            f"{elapsed:6.1f} s  ops {self.started}/{self.total}  ok {self.outcomes['ok']}  "
            f"fail {self.outcomes['fail']}  unknown {self.outcomes['unknown']}"
        )
        if self.faults == "kill-server":
            text += f"  server kills {self.kills}" + ("  (server down)" if self.server_down else "")
        elif self.faults == "kill-writer":
            text += f"  writers killed {self.kills}"
        return text


class Display:
    """The progress display: one line rewritten in place on a TTY, periodic lines otherwise."""

    def __init__(self, stream: TextIO, progress: Progress) -> None:
        self._stream = stream
        self._progress = progress
        self._tty = _isatty(stream)
        self._interval = 0.2 if self._tty else 2.0
        self._started = time.monotonic()
        self._dirty = False

    def show(self) -> None:
        """Show the current count."""
        line = self._progress.line(time.monotonic() - self._started)
        if self._tty:
            self._stream.write(f"\r{line}\x1b[K")
            self._dirty = True
        else:
            self._stream.write(line + "\n")
        self._stream.flush()

    def finish(self) -> None:
        """Show the final count and end the line."""
        self.show()
        self.end_line()

    def end_line(self) -> None:
        """End a line left open on a terminal, so that what follows starts on its own line."""
        if self._dirty:
            self._stream.write("\n")
            self._stream.flush()
            self._dirty = False

    async def run(self) -> None:
        """Redraw every interval until cancelled (a display refresh, not a wait for anything)."""
        while True:
            await anyio.sleep(self._interval)
            self.show()


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
