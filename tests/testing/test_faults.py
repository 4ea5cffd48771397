"""The fault-injecting wrapper; histories of clients under faults, checked for linearizability."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from _broken_backends import ContentTokenBackend, NonAtomicBackend
from arendezvous import (
    AsyncRendezvousBackend,
    FileBackend,
    MemoryBackend,
    MemoryStore,
    RendezvousConnectionError,
    Token,
    open_backend,
)
from arendezvous.testing.faults import FaultyBackend, InjectedFault
from arendezvous.testing.history import History, Recorder, RecordingBackend
from arendezvous.testing.linearizability import check

pytestmark = pytest.mark.anyio


def injected(error: BaseException) -> bool:
    return isinstance(error, RendezvousConnectionError) and isinstance(
        error.__cause__, InjectedFault
    )


# -- each fault --------------------------------------------------------------------------------


async def test_without_faults_calls_pass_through() -> None:
    inner = MemoryBackend("run", MemoryStore())
    backend = FaultyBackend(inner, seed=1)
    assert backend.name == "memory"
    assert backend.run_id == "run"
    assert backend.backend is inner
    _, token, written = await backend.set_state(b"x")
    assert written
    assert await backend.get_state() == (b"x", token)
    assert await backend.wait_for_change(None) == (b"x", token)
    assert backend.injected == {}
    assert backend.calls == 3
    await backend.aclose()


async def test_drop_before_applies_nothing() -> None:
    inner = MemoryBackend("run", MemoryStore())
    backend = FaultyBackend(inner, seed=1, drop_before=1.0)
    for call in (
        lambda: backend.set_state(b"x"),
        backend.get_state,
        lambda: backend.wait_for_change(None),
    ):
        with pytest.raises(RendezvousConnectionError, match="before the store saw") as caught:
            await call()
        assert injected(caught.value)
    assert await inner.get_state() is None
    assert backend.injected == {"drop_before": 3}


async def test_drop_after_applies_the_write_then_raises() -> None:
    inner = MemoryBackend("run", MemoryStore())
    backend = FaultyBackend(inner, seed=1, drop_after=1.0)
    with pytest.raises(RendezvousConnectionError, match="after the store applied") as caught:
        await backend.set_state(b"x")
    assert injected(caught.value)
    current = await inner.get_state()
    assert current is not None
    assert current[0] == b"x"
    with pytest.raises(RendezvousConnectionError):
        await backend.get_state()
    assert backend.injected == {"drop_after": 2}


async def test_timeout_hangs_then_raises_applied_or_not() -> None:
    applied = []
    for seed in range(12):
        inner = MemoryBackend("run", MemoryStore())
        backend = FaultyBackend(inner, seed=seed, timeout=1.0, timeout_after=0.001)
        with pytest.raises(RendezvousConnectionError, match="timed out") as caught:
            await backend.set_state(b"x")
        assert injected(caught.value)
        assert isinstance(caught.value.__cause__, InjectedFault)
        assert isinstance(caught.value.__cause__.__cause__, TimeoutError)
        applied.append(await inner.get_state() is not None)
    assert set(applied) == {True, False}  # both sides of the ambiguity occur


async def test_timeout_write_is_visible_to_others_while_its_writer_hangs() -> None:
    store = MemoryStore()
    hanging = FaultyBackend(MemoryBackend("run", store), seed=0, timeout=1.0, timeout_after=60)
    observer = MemoryBackend("run", store)
    # Seed 0's first call applies (fixed by the seed): the observer sees the write long before
    # the hang ends; the observer's wait_for_change is the synchronisation, not a sleep.
    async with anyio.create_task_group() as group:
        group.start_soon(hanging.set_state, b"x")
        with anyio.fail_after(10):
            seen = await observer.wait_for_change(None)
        assert seen is not None
        assert seen[0] == b"x"
        group.cancel_scope.cancel()


async def test_delays_do_not_change_results() -> None:
    inner = MemoryBackend("run", MemoryStore())
    backend = FaultyBackend(inner, seed=3, delay=1.0, max_delay=0.001)
    _, token, _ = await backend.set_state(b"x")
    assert await backend.get_state() == (b"x", token)
    assert backend.injected == {"delay": 2}


async def test_reads_can_be_spared() -> None:
    inner = MemoryBackend("run", MemoryStore())
    backend = FaultyBackend(inner, seed=1, drop_before=1.0, reads=False)
    assert await backend.get_state() is None
    assert await backend.wait_for_change(None, timeout=0) is None
    with pytest.raises(RendezvousConnectionError):
        await backend.set_state(b"x")


async def test_bad_state_raises_type_error_not_a_fault() -> None:
    backend = FaultyBackend(MemoryBackend("run", MemoryStore()), seed=1, drop_before=1.0)
    with pytest.raises(TypeError):
        await backend.set_state("text")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "options",
    [
        {"delay": -0.1},
        {"drop_before": 1.5},
        {"drop_after": float("nan")},
        {"drop_before": 0.5, "drop_after": 0.4, "timeout": 0.2},
        {"max_delay": -1},
        {"timeout_after": -1},
    ],
)
def test_options_are_validated(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        FaultyBackend(MemoryBackend("run"), seed=1, **options)


async def _outcomes(seed: int | str) -> list[str]:
    backend = FaultyBackend(
        MemoryBackend("run", MemoryStore()),
        seed=seed,
        drop_before=0.2,
        drop_after=0.2,
        timeout=0.1,
        timeout_after=0.0,
    )
    outcomes = []
    for number in range(40):
        try:
            if number % 2:
                await backend.get_state()
            else:
                await backend.set_state(b"%d" % number, None)
            outcomes.append("ok")
        except RendezvousConnectionError as error:
            outcomes.append(str(error))
    return outcomes


async def test_same_seed_same_faults() -> None:
    first = await _outcomes("seed-a")
    assert await _outcomes("seed-a") == first
    assert await _outcomes("seed-b") != first
    assert "ok" in first
    assert len(set(first)) > 2


# -- clients under faults, checked -------------------------------------------------------------


async def run_clients(
    make: Callable[[int], AsyncRendezvousBackend],
    *,
    clients: int = 6,
    rounds: int = 40,
    seed: int = 0,
) -> History:
    """Clients doing reads, waits and compare-and-swap increments; errors mean re-read."""
    recorder = Recorder()

    async def client(number: int, handle: AsyncRendezvousBackend) -> None:
        rng = random.Random(f"{seed}-{number}")
        backend = RecordingBackend(handle, recorder, client=f"client{number}")
        token: Token | None = None
        value = 0
        known = False  # whether token and value reflect what this client last saw
        for _ in range(rounds):
            roll = rng.random()
            try:
                if roll < 0.3 or not known:
                    current = await backend.get_state()
                    token = None if current is None else current[1]
                    value = 0 if current is None else int(current[0].split(b"/")[0])
                    known = True
                elif roll < 0.9:
                    state = b"%d/%d" % (value + 1, number)
                    result = await backend.set_state(state, token)
                    token = result[1]
                    value = 0 if result[1] is None else int(result[0].split(b"/")[0])
                else:
                    await backend.wait_for_change(token, timeout=0)
            except RendezvousConnectionError:
                known = False  # the write may or may not have happened: re-read
            await anyio.lowlevel.checkpoint()

    async def closing_client(number: int) -> None:
        # Each client owns its handle: it closes it when done, as a real one would.
        backend = make(number)
        try:
            await client(number, backend)
        finally:
            await backend.aclose()

    async with anyio.create_task_group() as group:
        for number in range(clients):
            group.start_soon(closing_client, number)
    return recorder.history()


FAULTS: dict[str, Any] = {
    "delay": 0.5,
    "max_delay": 0.002,
    "drop_before": 0.05,
    "drop_after": 0.05,
    "timeout": 0.03,
    "timeout_after": 0.002,
}


async def test_memory_backend_under_faults_is_linearizable() -> None:
    store = MemoryStore()
    history = await run_clients(
        lambda n: FaultyBackend(MemoryBackend("run", store), seed=n, **FAULTS)
    )
    assert len(history.select(kind="write", outcome="unknown")) >= 3
    assert len(history.select(kind="write", outcome="ok", written=True)) >= 10
    result = check(history)
    assert result.verdict == "ok", result


async def test_file_backend_under_faults_is_linearizable(tmp_path: Path) -> None:
    history = await run_clients(
        lambda n: FaultyBackend(
            FileBackend(tmp_path, "run", durable=False), seed=100 + n, **FAULTS
        ),
        clients=4,
        rounds=25,
    )
    assert history.select(kind="write", outcome="unknown")
    result = check(history)
    assert result.verdict == "ok", result


async def test_several_runs_are_checked_separately() -> None:
    store = MemoryStore()
    history = await run_clients(
        lambda n: FaultyBackend(MemoryBackend(f"run{n % 3}", store), seed=n, **FAULTS),
        clients=6,
        rounds=20,
    )
    result = check(history)
    assert result.verdict == "ok", result
    assert set(result.keys) == {"run0", "run1", "run2"}


async def test_non_atomic_compare_and_swap_is_caught_and_named() -> None:
    states: dict[str, tuple[bytes, Any]] = {}
    history = await run_clients(
        lambda n: FaultyBackend(
            NonAtomicBackend(states, "run"), seed=n, delay=0.3, max_delay=0.001
        ),
        clients=4,
        rounds=30,
    )
    result = check(history)
    assert result.verdict == "violation", result
    explanation = result.explanation
    assert explanation is not None
    assert explanation.minimal
    assert "won with the same token" in explanation.message
    winners = explanation.operations
    assert len(winners) == 2
    assert all(op.kind == "write" and op.written for op in winners)
    assert winners[0].token == winners[1].token
    assert winners[0].client != winners[1].client
    assert all(history[op.id] == op for op in winners)
    text = str(result)
    for op in winners:
        assert f"#{op.id}" in text
        assert op.client in text
    assert explanation.culprit is not None
    assert explanation.prefix_end == explanation.culprit.ret


async def test_repeating_tokens_are_caught() -> None:
    states: dict[str, tuple[bytes, Any]] = {}
    recorder = Recorder()
    backend = RecordingBackend(ContentTokenBackend(states, "run"), recorder)
    _, token, _ = await backend.set_state(b"a")
    _, token, _ = await backend.set_state(b"b", token)
    await backend.set_state(b"a", token)  # the token of b"a" again: ABA
    result = check(recorder.history())
    assert result.verdict == "violation"
    assert result.explanation is not None
    assert "never repeat" in result.explanation.message
    assert [op.id for op in result.explanation.operations] == [0, 2]


@contextlib.contextmanager
def store_server(store: str) -> Iterator[str]:
    """Start a throwaway server of *store* (skips loudly if missing); yield its URL."""
    if store == "redis":
        pytest.importorskip("redis")
        from servers.redis import RedisServer

        with RedisServer() as redis_server:
            yield redis_server.url
    elif store == "etcd":
        pytest.importorskip("aetcd")
        from servers.etcd import EtcdServer

        with EtcdServer() as etcd_server:
            yield etcd_server.url
    else:
        pytest.importorskip("asyncpg")
        from servers.postgres import PostgresServer

        with PostgresServer() as postgres_server:
            yield postgres_server.url


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # these stores' clients are asyncio-only
@pytest.mark.parametrize("store", ["redis", "etcd", "postgres"])
async def test_distributed_store_under_faults_is_linearizable(store: str) -> None:
    with store_server(store) as url:
        run_id = f"faults-{store}"
        history = await run_clients(
            lambda n: FaultyBackend(open_backend(url, run_id=run_id), seed=200 + n, **FAULTS),
            clients=4,
            rounds=30,
        )
    assert history.select(kind="write", outcome="unknown")
    assert len(history.select(kind="write", outcome="ok", written=True)) >= 5
    result = check(history)
    assert result.verdict == "ok", result
