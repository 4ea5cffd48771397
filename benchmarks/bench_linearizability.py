"""How long the linearizability checker takes on histories of 8 clients, 2,000 operations.

    python benchmarks/bench_linearizability.py [--ops 2000] [--clients 8] [--repeat 3]

Prints one table. Every history is a single key (one register: the hardest case, since keys are
checked separately), made in this run:

* ``recorded``: clients of a :class:`MemoryBackend` doing reads, compare-and-swap writes with the
  token they last saw, and ``wait_for_change(timeout=0)``, through a :class:`FaultyBackend` that
  delays every call up to 1 ms -- so calls of different clients overlap;
* ``recorded+faults``: the same with dropped connections before and after the write and
  timeouts (writes of unknown outcome);
* ``synthetic``: a simulated correct register with random call lengths, up to ``clients`` calls
  in flight at every moment, 10 % of writes of unknown outcome; ``synthetic 30%`` and ``50%``
  have more, and calls ten times longer (so more overlap);
* ``stale read``: ``synthetic 30%`` with one read three quarters in returning an old state (a
  violation): the check, then the explanation;
* ``non-atomic``: a backend whose compare-and-swap checks, awaits, then writes (a violation):
  the check, then the explanation (smallest failing prefix, minimal operations).

Goal (issue #5): 2,000 operations from 8 clients checked in under 5 s.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import statistics
from collections.abc import Callable

import anyio
import anyio.lowlevel

from arendezvous import (
    AsyncRendezvousBackend,
    MemoryBackend,
    MemoryStore,
    RendezvousConnectionError,
    Token,
)
from arendezvous.testing.faults import FaultyBackend
from arendezvous.testing.history import History, Operation, Recorder, RecordingBackend
from arendezvous.testing.linearizability import CheckResult, check

GOAL_SECONDS = 5.0


class NonAtomicBackend(AsyncRendezvousBackend):
    """Checks the token, yields, then writes: racing writers can both win."""

    def __init__(self, states: dict[str, tuple[bytes, int]], run_id: str) -> None:
        self.states = states
        self.run_id = run_id

    @property
    def name(self) -> str:
        return "non-atomic"

    async def get_state(self) -> tuple[bytes, Token] | None:
        return self.states.get(self.run_id)

    async def set_state(
        self, state: bytes, token: Token | None = None
    ) -> tuple[bytes, Token, bool]:
        current = self.states.get(self.run_id)
        if (None if current is None else current[1]) != token:
            return (b"", None, False) if current is None else (*current, False)
        await anyio.lowlevel.checkpoint()  # the bug
        new = max((value[1] for value in self.states.values()), default=0) + 1
        self.states[self.run_id] = (state, new)
        return state, new, True

    async def wait_for_change(
        self, token: Token | None, *, timeout: float | None = None
    ) -> tuple[bytes, Token] | None:
        current = self.states.get(self.run_id)
        return current if current is not None and current[1] != token else None

    async def aclose(self) -> None:
        pass


async def _client(backend: AsyncRendezvousBackend, ops: int, seed: int) -> None:
    rng = random.Random(seed)
    token: Token | None = None
    for number in range(ops):
        roll = rng.random()
        try:
            if roll < 0.4:
                current = await backend.get_state()
                token = None if current is None else current[1]
            elif roll < 0.9:
                _, token, _ = await backend.set_state(b"%d-%d" % (seed, number), token)
            else:
                await backend.wait_for_change(token, timeout=0)
        except RendezvousConnectionError:
            token = None  # re-read on the next turn, as a careful client would
        await anyio.lowlevel.checkpoint()


def recorded(total: int, clients: int, make: Callable[[int], AsyncRendezvousBackend]) -> History:
    recorder = Recorder()

    async def main() -> None:
        async with anyio.create_task_group() as group:
            for number in range(clients):
                backend = RecordingBackend(make(number), recorder, client=f"c{number}")
                group.start_soon(_client, backend, total // clients, number)

    anyio.run(main)
    return recorder.history()


def synthetic(
    total: int, clients: int, *, unknown: float = 0.1, longest: int = 400, seed: int = 1
) -> History:
    """A correct register, each client calling back to back with random call lengths.

    Writes use only three distinct states, so that which write of unknown outcome produced a
    token others saw is often ambiguous: the hard case for the search.
    """
    rng = random.Random(seed)
    clock = [rng.randrange(100) for _ in range(clients)]
    calls = []
    for number in range(total):
        client = min(range(clients), key=lambda c: clock[c])
        length = rng.randrange(10, longest)
        start = clock[client]
        clock[client] = start + length + rng.randrange(1, 50)
        point = start + rng.random() * length
        calls.append((point, start, start + length, client, number))
    register: tuple[bytes, int] | None = None
    issued = 0
    known: list[Token | None] = [None] * clients
    ops = []
    for _point, start, end, client, number in sorted(calls):
        roll = rng.random()
        name = f"c{client}"
        if roll < 0.4:
            ops.append(Operation.read(name, start, end, register))
            known[client] = None if register is None else register[1]
            continue
        if roll >= 0.9:
            changed = register is not None and register[1] != known[client]
            result = register if changed else None
            ops.append(Operation.wait(name, start, end, known[client], result))
            continue
        state = b"s%d" % (number % 3)
        token = known[client]
        lost = rng.random() < unknown
        applies = not lost or rng.random() < 0.5
        current = None if register is None else register[1]
        written: tuple[bytes, Token | None, bool]
        if applies and token == current:
            issued += 1
            register = (state, issued)
            written = (state, issued, True)
        else:
            written = (b"", None, False) if register is None else (*register, False)
        if lost:
            ops.append(Operation.write(name, start, None, state, token, None))
            known[client] = None
        else:
            ops.append(Operation.write(name, start, end, state, token, written))
            known[client] = written[1]
    return History(ops)


def with_stale_read(history: History) -> History:
    """Plant one violation three quarters of the way in: a read returns an old state."""
    late = len(history) * 3 // 4
    victim = next(op for op in history[late:] if op.kind == "read" and op.result is not None)
    old = [op for op in history[: victim.id - 100] if op.kind == "write" and op.written][-1]
    return History(
        dataclasses.replace(op, result=old.result) if op.id == victim.id else op for op in history
    )


def timed(history: History, repeat: int) -> tuple[CheckResult, float, float]:
    """Check *history* *repeat* times: the last result, and the median seconds of its search
    and of its explanation (each as the checker timed it, so the two never mix runs)."""
    results = [check(history, time_budget=120) for _ in range(repeat)]
    return (
        results[-1],
        statistics.median(result.stats.seconds for result in results),
        statistics.median(result.stats.explain_seconds for result in results),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    total, clients = args.ops, args.clients

    store = MemoryStore()
    states: dict[str, tuple[bytes, int]] = {}
    scenarios: list[tuple[str, History]] = [
        (
            "recorded",
            recorded(
                total,
                clients,
                lambda n: FaultyBackend(
                    MemoryBackend("bench-a", store), seed=n, delay=1.0, max_delay=0.001
                ),
            ),
        ),
        (
            "recorded+faults",
            recorded(
                total,
                clients,
                lambda n: FaultyBackend(
                    MemoryBackend("bench-b", store),
                    seed=n,
                    delay=1.0,
                    max_delay=0.001,
                    drop_before=0.03,
                    drop_after=0.03,
                    timeout=0.02,
                    timeout_after=0.002,
                ),
            ),
        ),
        ("synthetic", synthetic(total, clients)),
        ("synthetic 30%", synthetic(total, clients, unknown=0.3, longest=4000)),
        ("synthetic 50%", synthetic(total, clients, unknown=0.5, longest=4000)),
        ("stale read", with_stale_read(synthetic(total, clients, unknown=0.3, longest=4000))),
        (
            "non-atomic",
            recorded(
                total,
                clients,
                lambda n: FaultyBackend(
                    NonAtomicBackend(states, "bench-c"), seed=n, delay=1.0, max_delay=0.001
                ),
            ),
        ),
    ]

    header = (
        f"{'history':<16} {'ops':>5} {'unknown':>7} {'overlap':>7} {'verdict':>9} "
        f"{'steps':>6} {'check s':>8} {'explain s':>9} {'core':>4}  goal <{GOAL_SECONDS:.0f} s"
    )
    print(header)
    print("-" * len(header))
    for name, history in scenarios:
        result, seconds, explain_seconds = timed(history, args.repeat)
        explanation = result.explanation
        core = "-" if explanation is None else str(len(explanation.operations))
        explain = "-" if explanation is None else f"{explain_seconds:.3f}"
        total_seconds = seconds + explain_seconds
        print(
            f"{name:<16} {len(history):>5} {result.stats.unknown:>7} "
            f"{result.stats.max_concurrency:>7} {result.verdict:>9} {result.stats.steps:>6} "
            f"{seconds:>8.3f} {explain:>9} {core:>4}  "
            f"{'met' if total_seconds < GOAL_SECONDS else 'MISSED'}"
        )
        if explanation is not None:
            print("  " + str(explanation).replace("\n", "\n  "))


if __name__ == "__main__":
    main()
