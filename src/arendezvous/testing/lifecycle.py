"""A pytest conformance suite for a backend's run lifecycle: deleting, listing and expiring runs.

Subclass :class:`RunLifecycleConformance` and implement
:meth:`~RunLifecycleConformance.make_backend` (a handle that offers ``delete_run()`` and
``list_runs()``); implement :meth:`~RunLifecycleConformance.make_expiring_backend` as well if the
backend can expire runs nobody writes to::

    from arendezvous.testing.lifecycle import RunLifecycleConformance

    class TestMyLifecycle(RunLifecycleConformance):
        async def make_backend(self, run_id):
            return MyBackend(run_id)

        async def make_expiring_backend(self, run_id, expire_after):
            return MyBackend(run_id, expire_after=expire_after)

Tests run like :class:`~arendezvous.testing.conformance.BackendConformance`'s, on their own event
loop whatever the pytest set-up. They check that a deleted run starts afresh (nothing read back,
no old token or member version ever matching again) without touching other runs, that a write
racing a deletion lands wholly before or after it, that listing
finds every run with its size, age and member count, and that an expiring run disappears once
nobody has written to it for its time, and only then.
"""

from __future__ import annotations

from typing import Any, ClassVar

import anyio

from .._backend import AsyncRendezvousBackend, RunInfo
from .._errors import BackendClosedError
from ._promises import broken, show
from ._runner import KitTests

__all__ = ("RunLifecycleConformance",)

DELETE = ("lifecycle promise 1 (delete_run removes the run's state and member records; the run "
          "starts afresh: no old token or version matches again; other runs are untouched)")
LIST = ("lifecycle promise 2 (list_runs reports every run of the namespace, with its state's size, "
        "its age by the store's clock and its member records, and no deleted run)")
EXPIRE = ("lifecycle promise 3 (a run nobody writes to for expire_after seconds disappears; one "
          "written within that time stays)")
CLOSED = "a closed handle refuses lifecycle calls with BackendClosedError"


def _check(condition: bool, promise: str, detail: str) -> None:
    if not condition:
        raise broken(promise, detail)


def _find(runs: list[RunInfo], run_id: str) -> RunInfo | None:
    for info in runs:
        if info.run_id == run_id:
            return info
    return None


class RunLifecycleConformance(KitTests):
    """The run lifecycle's behaviours as pytest tests; subclass and implement
    :meth:`make_backend` (and :meth:`make_expiring_backend` for expiry)."""

    #: The expiry the expiry tests use (seconds): long enough for a few writes on a loaded
    #: machine, short enough to wait out.
    expire_after: ClassVar[float] = 1.0

    async def make_expiring_backend(
        self, run_id: str, expire_after: float
    ) -> AsyncRendezvousBackend:
        """Return a handle on *run_id* whose runs expire after *expire_after* seconds without a
        write. Not implemented: the expiry tests are skipped."""
        raise NotImplementedError

    async def _populate(self, backend: AsyncRendezvousBackend) -> tuple[Any, Any]:
        """Give the run a state and, if the backend has a member table, a member record."""
        _, token, written = await backend.set_state(b"kept-state")
        _check(written, DELETE, "could not create the run's state to delete it")
        table = backend.member_table()
        version = None
        if table is not None:
            member, written, _ = await table.put("node-a", "group", b"owner", None)
            _check(written and member is not None, DELETE, "could not create a member record")
            assert member is not None
            version = member.version
        return token, version

    async def test_deleting_a_run_starts_it_afresh(self, backend: AsyncRendezvousBackend) -> None:
        token, version = await self._populate(backend)
        _check(await backend.delete_run() is True, DELETE,
               "delete_run() of a run with state returned something else than True")
        current = await backend.get_state()
        _check(current is None, DELETE, f"get_state() after delete_run() returned {show(current)}")
        result = await backend.set_state(b"stale", token)
        _check(tuple(result) == (b"", None, False), DELETE,
               f"the old token still means something after delete_run(): {show(result)}")
        _, new_token, written = await backend.set_state(b"afresh")
        _check(written and new_token != token, DELETE,
               f"the recreated run repeats the old token {show(token)}")
        table = backend.member_table()
        if table is not None:
            _check(await table.get("node-a") is None, DELETE,
                   "a member record survived delete_run()")
            _check(await table.count("group") == 0, DELETE,
                   "a group still counts after delete_run()")
            _check(await table.touch("node-a", version) is None, DELETE,
                   "an old member version still touches after delete_run()")
            again, _, _ = await table.put("node-a", "group", b"owner", None)
            _check(again is not None and again.version != version, DELETE,
                   "the recreated member record repeats its old version")

    async def test_a_write_racing_a_deletion_is_wholly_before_or_after(
        self, open_backend: Any, run_id: str
    ) -> None:
        """A write racing ``delete_run()`` lands wholly before it (and is deleted with the run)
        or wholly after it (into a fresh run), never half of each: with a member table the write
        is a member put (a put before counts the old record too; one after counts only itself),
        without one it creates the state (which can succeed only once the run is gone)."""
        for attempt in range(10):
            deleter = await open_backend(f"{run_id}-{attempt}")
            writer = await open_backend(f"{run_id}-{attempt}")
            table = writer.member_table()
            outcome: list[Any] = []
            await self._populate(deleter)

            async def write(table: Any = table, writer: Any = writer,
                            outcome: list[Any] = outcome) -> None:
                if table is not None:
                    outcome.append(await table.put("node-b", "group", b"owner", None))
                else:
                    outcome.append(await writer.set_state(b"racing", None))

            async with anyio.create_task_group() as group:
                group.start_soon(deleter.delete_run)
                group.start_soon(write)
            if table is not None:
                _check(await table.get("node-a") is None, DELETE,
                       "a member record survived delete_run()")
                after = await table.get("node-b") is not None
                expected = (1, 1) if after else (2, 0)
                found = (outcome[0].group_size, await table.count("group"))
                _check(found == expected, DELETE,
                       f"a put racing delete_run() was half before and half after it: it "
                       f"counted {found[0]} and the group holds {found[1]}")
            else:
                state = await writer.get_state()
                written = outcome[0][2]
                _check((state is not None and state[0] == b"racing") == written, DELETE,
                       f"a create racing delete_run() returned written={written} while the "
                       f"run holds {show(state)}")

    async def test_deleting_an_empty_run(self, backend: AsyncRendezvousBackend) -> None:
        _check(await backend.delete_run() is False, DELETE,
               "delete_run() of a run that holds nothing returned something else than False")

    async def test_deleting_one_run_leaves_the_others(self, open_backend: Any, run_id: str) -> None:
        doomed, other = await open_backend(), await open_backend(run_id + "-other")
        await self._populate(doomed)
        kept = await other.set_state(b"other state")
        await doomed.delete_run()
        current = await other.get_state()
        _check(current == (b"other state", kept[1]), DELETE,
               f"deleting one run changed another: it reads {show(current)}")

    async def test_listing_finds_every_run(self, open_backend: Any, run_id: str) -> None:
        first, second = await open_backend(), await open_backend(run_id + "-2")
        await first.set_state(b"12345")
        await self._populate(second)
        runs = await first.list_runs()
        found = _find(runs, run_id)
        _check(found is not None, LIST, f"list_runs() misses {run_id!r}: {show(runs, 200)}")
        assert found is not None
        _check(found.size in (None, 5), LIST, f"the run's state is 5 bytes, listed as {found.size}")
        _check(found.age is None or 0 <= found.age < self.timeout, LIST,
               f"a run written just now is listed {found.age} s old")
        other = _find(runs, run_id + "-2")
        _check(other is not None, LIST, f"list_runs() misses {run_id + '-2'!r}")
        assert other is not None
        if second.member_table() is not None and other.members is not None:
            _check(other.members == 1, LIST, f"one member record, listed as {other.members}")
        await second.delete_run()
        _check(_find(await first.list_runs(), run_id + "-2") is None, LIST,
               "list_runs() still reports a deleted run")

    async def test_a_run_nobody_writes_expires(self, run_id: str) -> None:
        try:
            backend = await self.make_expiring_backend(run_id, self.expire_after)
        except NotImplementedError:
            return  # the backend does not expire runs: nothing to check
        try:
            await self._populate(backend)
            kept = await self.make_expiring_backend(run_id + "-kept", self.expire_after)
            try:
                _, token, _ = await kept.set_state(b"0")
                # Time must pass on the store's clock for anything to expire: nothing races here.
                for step in range(1, 7):
                    await anyio.sleep(self.expire_after / 3)
                    _, token, written = await kept.set_state(b"%d" % step, token)
                    _check(written, EXPIRE, "a run written every third of its expiry expired")
                # A store may expire lazily: look a bounded number of times, a quarter apart.
                for _ in range(40):
                    await anyio.sleep(self.expire_after / 4)
                    if await backend.get_state() is None:
                        break
                else:
                    raise broken(EXPIRE, f"a run unwritten for {10 * self.expire_after:g} s "
                                         f"(expire_after={self.expire_after:g}) is still there")
                table = backend.member_table()
                if table is not None:
                    _check(await table.get("node-a") is None, EXPIRE,
                           "the expired run's member record is still there")
                _check((await kept.get_state()) is not None, EXPIRE,
                       "a run written within its expiry disappeared")
            finally:
                await kept.aclose()
        finally:
            await backend.aclose()

    async def test_a_closed_handle_refuses_lifecycle_calls(self, run_id: str) -> None:
        backend = await self.make_backend(run_id)
        await backend.aclose()
        for name in ("delete_run", "list_runs"):
            try:
                await getattr(backend, name)()
            except BackendClosedError:
                continue
            except Exception as exc:
                raise broken(
                    CLOSED, f"{name}() after aclose() raised {type(exc).__name__}"
                ) from exc
            raise broken(CLOSED, f"{name}() after aclose() did not raise")

