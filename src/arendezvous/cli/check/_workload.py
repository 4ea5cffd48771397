"""One client's workload in ``arendezvous check``: random reads and compare-and-swap writes.

The same workload runs as a task of the harness (``--faults none`` and ``kill-server``) and in a
worker process (``--faults kill-writer``). The mix: about a third reads, a few
``wait_for_change`` calls with a short timeout, the rest writes of a state no other write uses,
with the token the client saw last (usually), an older one it saw (stale), ``None`` (create) or a
token no backend issues (garbage of another type). Stale and garbage tokens must lose; two racing
writes with the same token must not both win.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Mapping
from typing import Literal

import anyio
import anyio.lowlevel

from ..._backend import AsyncRendezvousBackend, Token
from ..._errors import RendezvousStateError
from ...testing.history import Outcome

__all__ = ("READ_SHARE", "WAIT_SHARE", "WAIT_TIMEOUT", "Kind", "run_client")

Kind = Literal["read", "write", "wait"]

READ_SHARE = 0.33
WAIT_SHARE = 0.05
WAIT_TIMEOUT = 0.05
"""Seconds a ``wait_for_change`` call waits: short, so a quiet run costs the client little."""

_STALE, _CREATE, _GARBAGE = 0.10, 0.06, 0.04  # shares of writes; the rest use the latest token
_REMEMBERED = 8  # tokens a client keeps per run to pick stale ones from
_NO_EFFECT = (TypeError, ValueError, RendezvousStateError)  # as the recorder classifies them


class _Tokens:
    """The tokens one client saw on one run, newest last (``None``: it saw no state)."""

    def __init__(self) -> None:
        self.seen: list[Token | None] = []

    def note(self, token: Token | None) -> None:
        if self.seen and self.seen[-1] == token:
            return
        self.seen.append(token)
        del self.seen[:-_REMEMBERED]

    @property
    def latest(self) -> Token | None:
        return self.seen[-1] if self.seen else None


def _pick_token(tokens: _Tokens, rng: random.Random, client: str, number: int) -> Token | None:
    roll = rng.random()
    if roll < _GARBAGE:
        # Tokens of types no backend issues, and a string like PyTorch's "invalid" probe.
        garbage: list[Token] = ["invalid", number, ("garbage", client, number)]
        return rng.choice(garbage)
    if roll < _GARBAGE + _CREATE:
        return None
    if roll < _GARBAGE + _CREATE + _STALE and len(tokens.seen) > 1:
        return rng.choice(tokens.seen[:-1])
    return tokens.latest


async def run_client(
    name: str,
    handles: Mapping[str, AsyncRendezvousBackend],
    rng: random.Random,
    take: Callable[[], bool],
    *,
    on_complete: Callable[[Kind, Outcome, BaseException | None], Awaitable[None]] | None = None,
) -> int:
    """Run operations on *handles* (one per run id) while *take* grants one more; return the count.

    *on_complete* is told each call's outcome (classified as the history recorder does) and any
    exception, and is awaited before the next call, so a harness can hold a client back while
    the store is down. Errors are the workload, not a reason to stop: every exception is
    reported and the client goes on.
    """
    runs = sorted(handles)
    tokens = {run: _Tokens() for run in runs}
    count = 0
    while take():
        count += 1
        run = rng.choice(runs)
        handle = handles[run]
        seen = tokens[run]
        roll = rng.random()
        kind: Kind = (
            "read" if roll < READ_SHARE else "wait" if roll < READ_SHARE + WAIT_SHARE else "write"
        )
        error: BaseException | None = None
        outcome: Outcome = "ok"
        try:
            if kind == "read":
                current = await handle.get_state()
                seen.note(None if current is None else current[1])
            elif kind == "wait":
                changed = await handle.wait_for_change(seen.latest, timeout=WAIT_TIMEOUT)
                if changed is not None:
                    seen.note(changed[1])
            else:
                token = _pick_token(seen, rng, name, count)
                _, new_token, _ = await handle.set_state(f"{name}:{count}".encode(), token)
                seen.note(new_token)
        except Exception as exc:  # the harness reports every kind of error
            error = exc
            outcome = "unknown" if kind == "write" and not isinstance(exc, _NO_EFFECT) else "fail"
        if on_complete is not None:
            await on_complete(kind, outcome, error)
        # Backends that complete without yielding (memory) would let one client run every
        # operation; a checkpoint lets the others interleave.
        await anyio.lowlevel.checkpoint()
    return count
