"""One client of ``arendezvous check``: random reads and compare-and-swap writes on a few runs.

The same workload runs as a task of the harness (``--faults none`` and ``kill-server``) and as a
separate OS process (``--faults kill-writer``: ``python -m arendezvous._check_client ...``, which
the harness SIGKILLs). Every call goes through a
:class:`~arendezvous.testing.history.RecordingBackend`, so the history holds exactly what the
client saw; a worker process writes it to its own JSON-lines file and tells the harness on stdout,
one line per call, what it is doing (the harness counts progress and times its kills from that).

The mix: about a third reads, a few ``wait_for_change`` calls with a short timeout, the rest
writes of a state no other write uses, with the token the client saw last (usually), an older
one it saw (stale), ``None`` (create) or a token no backend issues (garbage of another type).
Stale and garbage tokens must lose; two racing writes with the same token must not both win.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import random
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TextIO

import anyio
import anyio.lowlevel
import anyio.to_thread

from ._backend import AsyncRendezvousBackend, Token
from ._errors import RendezvousStateError
from .backends._url import open_backend
from .testing.history import JsonTokenCodec, Outcome, Recorder, RecordingBackend

__all__ = (
    "DecodedToken",
    "Kind",
    "StoreTokenCodec",
    "close_handles",
    "main",
    "open_handles",
    "run_client",
    "worker_command",
)

Kind = Literal["read", "write", "wait"]

READ_SHARE = 0.33
WAIT_SHARE = 0.05
WAIT_TIMEOUT = 0.05
"""Seconds a ``wait_for_change`` call waits: short, so a quiet run costs the client little."""

_STALE, _CREATE, _GARBAGE = 0.10, 0.06, 0.04  # shares of writes; the rest use the latest token
_REMEMBERED = 8  # tokens a client keeps per run to pick stale ones from
_NO_EFFECT = (TypeError, ValueError, RendezvousStateError)  # as the recorder classifies them


# -- tokens in history files ---------------------------------------------------------------------


@dataclass(frozen=True)
class DecodedToken:
    """A store's token read back from a history file: equal exactly when the tokens were equal.

    The checker only compares tokens, so it needs no instance of the store's own class.
    """

    kind: str
    fields: tuple[object, ...]

    def __repr__(self) -> str:
        name = self.kind.rpartition(".")[2]
        return f"{name}{self.fields!r}"


class StoreTokenCodec(JsonTokenCodec):
    """:class:`~arendezvous.testing.history.JsonTokenCodec` plus frozen dataclass tokens.

    The Redis, etcd and PostgreSQL tokens are frozen dataclasses of ``str``, ``int`` and
    ``bytes``; their ``repr`` is shortened for people, so the default fallback (``repr``) could
    make two different tokens equal once merged. Here their type and every field are written, so
    histories of several processes merge exactly.
    """

    def encode(self, token: Token) -> object | None:
        encoded = super().encode(token)
        if encoded is not None:
            return encoded
        kind = type(token)
        params = getattr(kind, "__dataclass_params__", None)
        if params is None or not params.frozen or not dataclasses.is_dataclass(token):
            return None
        fields: list[object] = []
        for field in dataclasses.fields(token):
            value = getattr(token, field.name)
            item = None if value is None else super().encode(value)
            if value is not None and item is None:
                return None
            fields.append(item)
        return {"dataclass": [f"{kind.__module__}.{kind.__qualname__}", fields]}

    def decode(self, data: Any) -> Token:
        if isinstance(data, dict) and len(data) == 1 and "dataclass" in data:
            described = data["dataclass"]
            if (
                not isinstance(described, list)
                or len(described) != 2
                or not isinstance(described[0], str)
                or not isinstance(described[1], list)
            ):
                raise ValueError(f"not an encoded token: {data!r}")
            kind, fields = described
            decoded = []
            for item in fields:  # a loop, not a generator: super() needs this frame
                decoded.append(super().decode(item))
            return DecodedToken(kind, tuple(decoded))
        return super().decode(data)


# -- the workload ----------------------------------------------------------------------------------


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


def open_handles(
    url: str,
    run_ids: Sequence[str],
    recorder: Recorder,
    client: str,
    opener: Callable[[str, str], AsyncRendezvousBackend] | None = None,
    announce: Callable[[Kind], None] | None = None,
) -> dict[str, AsyncRendezvousBackend]:
    """One recorded handle per run for *client*, opened by URL (or by *opener(url, run_id)*).

    *announce*, if given, is told the kind of each call after its invocation is recorded and
    just before the store is called: a kill timed from it lands inside a recorded call.
    """
    handles: dict[str, AsyncRendezvousBackend] = {}
    for run_id in run_ids:
        backend = open_backend(url, run_id=run_id) if opener is None else opener(url, run_id)
        if announce is not None:
            backend = _Announced(backend, announce)
        handles[run_id] = RecordingBackend(backend, recorder, client=client, key=run_id)
    return handles


class _Announced(AsyncRendezvousBackend):
    """Tells *announce* what kind of call starts, then makes it; adds no await of its own."""

    def __init__(self, backend: AsyncRendezvousBackend, announce: Callable[[Kind], None]) -> None:
        self._backend = backend
        self._announce = announce

    @property
    def name(self) -> str:
        return self._backend.name

    async def get_state(self) -> tuple[bytes, Token] | None:
        self._announce("read")
        return await self._backend.get_state()

    async def set_state(
        self, state: bytes, token: Token | None = None
    ) -> tuple[bytes, Token, bool]:
        self._announce("write")
        return await self._backend.set_state(state, token)

    async def wait_for_change(
        self, token: Token | None, *, timeout: float | None = None
    ) -> tuple[bytes, Token] | None:
        self._announce("wait")
        return await self._backend.wait_for_change(token, timeout=timeout)

    async def aclose(self) -> None:
        await self._backend.aclose()


async def close_handles(handles: Mapping[str, AsyncRendezvousBackend]) -> None:
    """Close every handle, ignoring errors: a store that is down may refuse a clean goodbye."""
    for handle in handles.values():
        with contextlib.suppress(Exception):
            await handle.aclose()


# -- the worker process ----------------------------------------------------------------------------


def worker_command(
    url: str,
    run_ids: Sequence[str],
    *,
    client: str,
    ops: int,
    seed: int,
    history: str,
    deadline_ns: int,
    event_loop: str,
) -> list[str]:
    """The command line of one worker process (see :func:`main`)."""
    command = [sys.executable, "-m", "arendezvous._check_client", url]
    for run_id in run_ids:
        command += ["--run-id", run_id]
    command += [
        "--client", client,
        "--ops", str(ops),
        "--seed", str(seed),
        "--history", history,
        "--deadline-ns", str(deadline_ns),
        "--event-loop", event_loop,
    ]  # fmt: skip
    return command


def _say(out: TextIO, line: str) -> None:
    out.write(line + "\n")
    out.flush()


async def _work(args: argparse.Namespace, out: TextIO) -> None:
    def announce(kind: Kind) -> None:
        _say(out, f"> {kind}")

    with Recorder(args.history, source=args.client, codec=StoreTokenCodec()) as recorder:
        handles = open_handles(args.url, args.run_id, recorder, args.client, announce=announce)
        try:
            _say(out, "ready")
            # Start together with the other workers: the harness says when.
            if (await anyio.to_thread.run_sync(sys.stdin.readline)).strip() != "go":
                return
            done = 0

            def take() -> bool:
                nonlocal done
                if done >= args.ops or time.monotonic_ns() >= args.deadline_ns:
                    return False
                done += 1
                return True

            async def completed(kind: Kind, outcome: Outcome, error: BaseException | None) -> None:
                detail = "" if error is None else f" {type(error).__name__}"
                _say(out, f"< {outcome}{detail}")

            await run_client(
                args.client,
                handles,
                random.Random(args.seed),
                take,
                on_complete=completed,
            )
        finally:
            await close_handles(handles)
    _say(out, "done")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m arendezvous._check_client URL --run-id R ... --client C --ops N ...``.

    Protocol on stdout: ``ready`` once the handles are open; after ``go`` on stdin, ``> KIND``
    as each call reaches the store (its invocation already recorded) and ``< OUTCOME [ERROR]``
    after it; ``done`` at the end. The history goes to
    ``--history`` as JSON lines, flushed event by event, so a SIGKILL loses nothing recorded.
    """
    parser = argparse.ArgumentParser(prog="python -m arendezvous._check_client")
    parser.add_argument("url")
    parser.add_argument("--run-id", action="append", required=True)
    parser.add_argument("--client", required=True)
    parser.add_argument("--ops", type=int, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--history", required=True)
    parser.add_argument("--deadline-ns", type=int, required=True)
    parser.add_argument("--event-loop", choices=["asyncio", "trio"], default="asyncio")
    args = parser.parse_args(argv)
    anyio.run(_work, args, sys.stdout, backend=args.event_loop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
