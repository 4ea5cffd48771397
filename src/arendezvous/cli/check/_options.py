"""What ``arendezvous check`` is asked to do: the options, their checks, the run's fixed bounds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ._servers import SERVERS

__all__ = (
    "ASYNCIO_ONLY",
    "FAULTS",
    "GRACE",
    "OPS_PER_KILL",
    "CheckOptions",
    "Faults",
    "UsageError",
)

Faults = Literal["none", "kill-server", "kill-writer"]
FAULTS: tuple[Faults, ...] = ("none", "kill-server", "kill-writer")

ASYNCIO_ONLY = frozenset({"redis", "rediss", "etcd", "postgresql", "postgres"})
"""URL schemes whose store clients run only on asyncio."""

GRACE = 10.0
"""Seconds calls may run past the time limit before they are cancelled or their process killed."""

OPS_PER_KILL = 400
"""Without ``--kills``, one fault per this many operations (at least one)."""


class UsageError(Exception):
    """The options do not make a run (exit status 2)."""


@dataclass(frozen=True)
class CheckOptions:
    """What ``arendezvous check`` is asked to do; see ``arendezvous check --help``."""

    url: str | None = None
    start: str | None = None
    clients: int = 8
    ops: int = 2000
    runs: int = 3
    faults: Faults = "none"
    kills: int | None = None
    seed: int | None = None
    time_limit: float = 60.0
    check_time: float = 60.0
    history: str | None = None
    event_loop: str = "asyncio"

    def validate(self) -> None:
        """:raises UsageError: the options contradict each other or are out of range."""
        if (self.url is None) == (self.start is None):
            raise UsageError("give a backend URL or --start SERVER (one of them)")
        if self.start is not None and self.start not in SERVERS:
            raise UsageError(f"--start takes one of {', '.join(SERVERS)}")
        if self.faults not in FAULTS:
            raise UsageError(f"--faults takes one of {', '.join(FAULTS)}")
        if self.faults == "kill-server" and self.start is None:
            raise UsageError(
                "--faults kill-server needs a server the harness starts and may kill: "
                f"use --start {'|'.join(SERVERS)} instead of a URL"
            )
        scheme = (self.url or "").partition("://")[0].lower()
        if self.faults == "kill-writer" and scheme == "memory":
            raise UsageError(
                "memory:// state lives in one process; --faults kill-writer runs clients as "
                "processes: use a store they share (file://, redis://, ...)"
            )
        counts = (("--clients", self.clients), ("--ops", self.ops), ("--runs", self.runs))
        for name, value in counts:
            if value < 1:
                raise UsageError(f"{name} must be at least 1")
        if self.kills is not None and self.kills < 0:
            raise UsageError("--kills must not be negative")
        for name, seconds in (("--time-limit", self.time_limit), ("--check-time", self.check_time)):
            if not 0 < seconds < float("inf"):
                raise UsageError(f"{name} must be a positive number of seconds")
        if self.event_loop not in ("asyncio", "trio"):
            raise UsageError("--event-loop takes asyncio or trio")
        if self.event_loop == "trio" and (self.start is not None or scheme in ASYNCIO_ONLY):
            raise UsageError(
                "the Redis, etcd and PostgreSQL backends run only on asyncio: drop --event-loop"
            )

    @property
    def fault_count(self) -> int:
        """How many faults to inject."""
        if self.faults == "none":
            return 0
        return self.kills if self.kills is not None else max(1, self.ops // OPS_PER_KILL)
