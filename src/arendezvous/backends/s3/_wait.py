"""Pieces of the S3 backend's polling ``wait_for_change`` that a shared base can take over:
the schedule of pauses and the bookkeeping of an outage."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

import anyio

from ..._errors import RendezvousConnectionError

__all__ = ("Outage", "poll_pauses")


def poll_pauses(
    first: float, cap: float, uniform: Callable[[float, float], float] = random.uniform
) -> Iterator[float]:
    """The pauses between the re-reads of a waiting ``wait_for_change``, in seconds.

    The interval starts at *first* and doubles after every pause up to *cap*: a change soon after
    the wait began (common in a rendezvous, where writes come in bursts) is seen quickly, and a
    long wait costs at most about one ``GetObject`` per *cap* seconds. Each pause is drawn
    between 75% and 100% of the interval, so that many waiters do not poll in lockstep.
    """
    interval = first
    while True:
        yield interval * uniform(0.75, 1.0)
        interval = min(interval * 2, cap)


class Outage:
    """When the store first failed to answer in the current run of failures, and how."""

    __slots__ = ("error", "since")

    def __init__(self) -> None:
        self.error: RendezvousConnectionError | None = None
        self.since = 0.0

    def failed(self, error: RendezvousConnectionError) -> None:
        """Record a failed attempt; the outage starts at the first one."""
        if self.error is None:
            self.since = anyio.current_time()
        self.error = error

    def clear(self) -> None:
        """The store answered: the outage is over."""
        self.error = None
