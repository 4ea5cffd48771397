"""The operations of a run with in-process clients, handed out one by one."""

from __future__ import annotations

import time

import anyio

from ._progress import Progress

__all__ = ("OpBudget",)


class OpBudget:
    """Hands out the run's operations to in-process clients until the count or time runs out."""

    def __init__(self, total: int, deadline: float, progress: Progress) -> None:
        self._total = total
        self._deadline = deadline
        self._progress = progress
        self._watchers: list[tuple[int, anyio.Event]] = []
        self.finished = False

    def take(self) -> bool:
        """Grant one more operation (``True``) or say the run is over (``False``)."""
        if self.finished:
            return False
        if self._progress.started >= self._total or time.monotonic() >= self._deadline:
            self.finish()
            return False
        self._progress.invoked()
        for point, event in self._watchers:
            if self._progress.started >= point:
                event.set()
        return True

    def finish(self) -> None:
        """End the run: grant nothing more and wake every watcher."""
        self.finished = True
        for _, event in self._watchers:
            event.set()

    def reached(self, point: int) -> anyio.Event:
        """An event set once *point* operations have started (or the run is over)."""
        event = anyio.Event()
        if self.finished or self._progress.started >= point:
            event.set()
        self._watchers.append((point, event))
        return event
