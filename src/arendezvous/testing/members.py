"""A pytest conformance suite for a backend's optional :class:`~arendezvous.MemberTable`.

Subclass :class:`MemberTableConformance` and implement :meth:`~MemberTableConformance.make_backend`
(the same hook as :class:`~arendezvous.testing.conformance.BackendConformance`): every ``test_*``
method then runs against the table of your backend's handles::

    from arendezvous.testing.members import MemberTableConformance

    class TestMyMembers(MemberTableConformance):
        async def make_backend(self, run_id):
            return MyBackend(run_id, ...)

It checks the table's contract (see :mod:`arendezvous._members`): compare-and-swap on versions
that never repeat, group sizes counted atomically with the write (racing joiners each see a
different size), touches that keep seq and group, ages by the store's clock when it has one, push
notifications when it has none, bad input refused before anything is written, cancellation never
half-writing, and a closed handle closing its table.
"""

from __future__ import annotations

from typing import Any, ClassVar

import anyio
import pytest

from .._backend import AsyncRendezvousBackend, Token
from .._errors import BackendClosedError
from .._members import MAX_MEMBER_VALUE, Member, MemberTable
from ._promises import broken, show
from ._runner import KitTests

__all__ = ("MemberTableConformance",)

_GARBAGE_VERSIONS: tuple[Any, ...] = ("invalid", 0, 1, -1, 2**70, b"x", 1.5, (1, 2), object(),
                                      ["unhashable"])

CAS = ("member promise 1 (put is a compare-and-swap on the record's version: None creates only, "
       "the current version writes; anything else changes nothing and returns the current record)")
NO_ABA = "member promise 2 (versions never repeat within a table: no ABA)"
SIZE = ("member promise 3 (a put returns the group's size counted atomically with the write: "
        "racing joiners each see a different size)")
TOUCH = ("member promise 4 (touch gives the current record a new version and age zero, and "
         "keeps its group, value and seq)")
CLOCK = ("member promise 5 (ages are the store's elapsed time since the last write, never "
         "negative; None without a clock)")
PUSH = ("member promise 6 (a table without a clock implements wait_for_change: it returns True "
        "when the record moves off the version, False on timeout)")
INPUT = ("member promise 7 (bad node ids, groups and values raise TypeError or ValueError "
         "before anything is written)")
CANCEL = "member promise 8 (a cancelled put happened entirely or not at all)"
SHARED = "member records are per run (handles on a run share them; other runs are apart)"
CLOSED = "a member table closes with its backend handle (BackendClosedError)"


def _describe(member: Member | None) -> str:
    return "no record" if member is None else (
        f"record of {member.node!r} in group {member.group!r} at version {show(member.version)}"
    )


def _table_of(backend: AsyncRendezvousBackend) -> MemberTable:
    table = backend.member_table()
    if table is None:
        raise broken(CAS, f"{type(backend).__name__}.member_table() returned None: the backend "
                          "does not offer the member-table capability this suite tests")
    return table


def _check(condition: bool, promise: str, detail: str) -> None:
    if not condition:
        raise broken(promise, detail)


class MemberTableConformance(KitTests):
    """The member table's behaviours as pytest tests; subclass and implement
    :meth:`make_backend` (a handle whose ``member_table()`` is a table).

    Tests run like :class:`~arendezvous.testing.conformance.BackendConformance`'s: on their own
    event loop, whatever the pytest set-up; :attr:`timeout`, :attr:`deadline` and
    :attr:`clock_resolution` tune them.
    """

    #: How far a store's clock may read behind real time when a record is read right after it
    #: was written (seconds): store clocks tick in microseconds or milliseconds.
    clock_resolution: ClassVar[float] = 0.01

    # -- reading and writing ---------------------------------------------------------------------

    async def test_has_clock_is_declared(self, backend: AsyncRendezvousBackend) -> None:
        table = _table_of(backend)
        _check(isinstance(table.has_clock, bool), CLOCK,
               f"has_clock must be a bool, not {show(table.has_clock)}")

    async def test_an_unknown_node_has_no_record(self, backend: AsyncRendezvousBackend) -> None:
        table = _table_of(backend)
        got = await table.get("nobody")
        _check(got is None, CAS, f"get() of a node never put returned {_describe(got)}")
        listed = await table.members("empty-group")
        _check(listed == [], CAS, f"members() of an empty group returned {show(listed)}")
        counted = await table.count("empty-group")
        _check(counted == 0, SIZE, f"count() of an empty group returned {show(counted)}")

    async def test_put_creates_a_record(self, backend: AsyncRendezvousBackend) -> None:
        table = _table_of(backend)
        member, written, size = await _put(table, "a", "g1", b"owner-a", None)
        _check(written and member is not None, CAS,
               "put('a', 'g1', b'owner-a', None) on a node without a record did not write")
        assert member is not None
        _check((member.node, member.group, member.value) == ("a", "g1", b"owner-a"), CAS,
               f"the written record is {_describe(member)} with value {show(member.value)}")
        _check(size == 1, SIZE, f"the group's size after its first put is {show(size)}, not 1")
        got = await table.get("a")
        _check(got is not None and _same(got, member), CAS,
               f"get() after the put returned {_describe(got)}, not {_describe(member)}")
        _check(await table.count("g1") == 1, SIZE, "count('g1') after one put is not 1")

    async def test_create_only_put_loses_to_an_existing_record(
        self, backend: AsyncRendezvousBackend
    ) -> None:
        table = _table_of(backend)
        first = await _create(table, "a", "g1", b"first")
        member, written, size = await _put(table, "a", "g2", b"second", None)
        _check(not written, CAS, "put(version=None) replaced an existing record")
        _check(size == 0, SIZE, f"a put that did not write returned group size {show(size)}")
        _check(member is not None and _same(member, first) and member.value == b"first", CAS,
               f"a losing put must return the current record, {_describe(first)}; "
               f"it returned {_describe(member)}")
        _check(await table.count("g2") == 0, CAS, "a losing put counted the node in its group")

    async def test_put_with_the_current_version_moves_the_record(
        self, backend: AsyncRendezvousBackend
    ) -> None:
        table = _table_of(backend)
        first = await _create(table, "a", "g1", b"v")
        moved, written, size = await _put(table, "a", "g2", b"w", first.version)
        _check(written and moved is not None, CAS,
               f"put with the current version {show(first.version)} did not write")
        assert moved is not None
        _check(moved.version != first.version, NO_ABA,
               f"a put kept the version {show(first.version)}")
        _check(moved.seq > first.seq, CAS,
               f"a put must give a greater seq: {first.seq} then {moved.seq}")
        _check((moved.group, moved.value) == ("g2", b"w"), CAS,
               f"the moved record is {_describe(moved)} with value {show(moved.value)}")
        _check(size == 1, SIZE, f"the new group's size is {show(size)}, not 1")
        counts = (await table.count("g1"), await table.count("g2"))
        _check(counts == (0, 1), SIZE, f"after the move the groups count {counts}, not (0, 1)")

    @pytest.mark.parametrize("garbage", _GARBAGE_VERSIONS, ids=repr)
    async def test_stale_or_garbage_versions_never_write_nor_raise(
        self, backend: AsyncRendezvousBackend, garbage: Any
    ) -> None:
        table = _table_of(backend)
        first = await _create(table, "a", "g1", b"v")
        member, written, _ = await _put(table, "a", "g2", b"w", garbage)
        _check(not written, CAS, f"put with version {show(garbage)} wrote over "
                                 f"{_describe(first)}")
        _check(member is not None and _same(member, first), CAS,
               f"put with version {show(garbage)} returned {_describe(member)}")
        _check(await _call(table.touch("a", garbage), "touch") is None, TOUCH,
               f"touch with version {show(garbage)} refreshed the record")
        _check(await _call(table.delete("a", garbage), "delete") is False, CAS,
               f"delete with version {show(garbage)} deleted the record")
        nobody = await _put(table, "nobody", "g1", b"v", garbage)
        _check(tuple(nobody) == (None, False, 0), CAS,
               f"put with version {show(garbage)} on a node without a record returned "
               f"{show(tuple(nobody))}, not (None, False, 0)")
        current = await table.get("a")
        _check(current is not None and _same(current, first), CAS,
               f"after the garbage the record is {_describe(current)}, not {_describe(first)}")

    async def test_versions_never_repeat(self, backend: AsyncRendezvousBackend) -> None:
        table = _table_of(backend)
        member = await _create(table, "a", "g", b"v")
        seen: list[tuple[Token, str]] = [(member.version, "put #0")]
        for step in range(12):
            if step % 3 == 2:
                _check(await table.delete("a", member.version), CAS,
                       "delete with the current version did not delete")
                fresh, _, _ = await _put(table, "a", "g", b"v", None)
                how = f"put #{step + 1} (after a delete)"
            elif step % 3 == 1:
                fresh = await table.touch("a", member.version)
                how = f"touch #{step + 1}"
            else:
                fresh, _, _ = await _put(table, "a", "g", b"v", member.version)
                how = f"put #{step + 1}"
            _check(fresh is not None, CAS, f"{how} with the current version did not write")
            assert fresh is not None
            for earlier, by in seen:
                _check(earlier != fresh.version, NO_ABA,
                       f"version {show(fresh.version)} was issued twice: ABA (by {by}, again "
                       f"by {how})")
            seen.append((fresh.version, how))
            member = fresh
        for old, by in seen[:-1]:
            _check(await table.touch("a", old) is None, NO_ABA,
                   f"the stale version {show(old)} (from {by}) still touches the record")

    async def test_touch_refreshes_without_moving(self, backend: AsyncRendezvousBackend) -> None:
        table = _table_of(backend)
        first = await _create(table, "a", "g", b"v")
        touched = await table.touch("a", first.version)
        _check(touched is not None, TOUCH, "touch with the current version returned None")
        assert touched is not None
        _check(touched.version != first.version, TOUCH, "a touch kept the record's version")
        _check((touched.group, touched.value, touched.seq) == (first.group, first.value,
                                                               first.seq), TOUCH,
               f"a touch changed the record: {_describe(first)} seq {first.seq} -> "
               f"{_describe(touched)} seq {touched.seq}")
        _check(await table.touch("a", first.version) is None, TOUCH,
               "the version before the touch still touches")
        current = await table.get("a")
        _check(current is not None and _same(current, touched), TOUCH,
               f"get() after the touch returned {_describe(current)}")

    async def test_delete_needs_the_current_version(self, backend: AsyncRendezvousBackend) -> None:
        table = _table_of(backend)
        first = await _create(table, "a", "g", b"v")
        touched = await table.touch("a", first.version)
        assert touched is not None
        _check(not await table.delete("a", first.version), CAS,
               "delete with a stale version deleted the record")
        _check(await table.delete("a", touched.version), CAS,
               "delete with the current version did not delete")
        _check(await table.get("a") is None, CAS, "the record is still there after a delete")
        _check(await table.count("g") == 0, SIZE, "the group still counts a deleted record")
        _check(not await table.delete("a", touched.version), CAS, "a record was deleted twice")
        _check(await table.touch("a", touched.version) is None, TOUCH,
               "a deleted record was touched")

    async def test_members_are_in_arrival_order(self, backend: AsyncRendezvousBackend) -> None:
        table = _table_of(backend)
        for node in ("c", "a", "b"):
            await _create(table, node, "g", node.encode())
        await _create(table, "x", "other", b"x")
        listed = await table.members("g")
        order = [member.node for member in listed]
        _check(order == ["c", "a", "b"], CAS,
               f"members('g') must list the group in arrival (seq) order: {order}")
        _check(all(member.group == "g" for member in listed), CAS,
               f"members('g') listed records of other groups: {[m.group for m in listed]}")
        counts = (await table.count("g"), await table.count("other"))
        _check(counts == (3, 1), SIZE, f"the groups count {counts}, not (3, 1)")

    async def test_handles_on_one_run_share_records(self, open_backend: Any) -> None:
        first, second = _table_of(await open_backend()), _table_of(await open_backend())
        member = await _create(first, "a", "g", b"v")
        seen = await second.get("a")
        _check(seen is not None and _same(seen, member), SHARED,
               f"another handle's table reads {_describe(seen)}, not {_describe(member)}")
        touched = await second.touch("a", member.version)
        _check(touched is not None, SHARED, "another handle could not touch the record")
        _check(await first.touch("a", member.version) is None, SHARED,
               "the first handle's stale version still touches after the other's touch")

    async def test_runs_are_isolated(self, open_backend: Any, run_id: str) -> None:
        mine = _table_of(await open_backend())
        other = _table_of(await open_backend(run_id + "-other"))
        member = await _create(mine, "a", "g", b"v")
        _check(await other.get("a") is None, SHARED, "another run's table holds the record")
        _check(await other.count("g") == 0, SHARED, "another run's group counts the record")
        _check(await other.touch("a", member.version) is None, SHARED,
               "another run's table accepted the version")

    async def test_value_at_the_limit_round_trips(self, backend: AsyncRendezvousBackend) -> None:
        table = _table_of(backend)
        value = bytes(range(256)) * (MAX_MEMBER_VALUE // 256)
        node, group = "\u00e9t\u00e9 node/with:odd#chars", "g/\u00e9"
        _, written, _ = await _put(table, node, group, value, None)
        _check(written, CAS, "a record with a value at the size limit was not written")
        got = await table.get(node)
        _check(got is not None and got.value == value and got.group == group, CAS,
               f"the record read back is {_describe(got)}")

    @pytest.mark.parametrize(
        ("node", "group", "value", "error"),
        [
            (7, "g", b"v", TypeError),
            ("a", None, b"v", TypeError),
            ("a", "g", "text", TypeError),
            ("a", "g", bytearray(b"v"), TypeError),
            ("", "g", b"v", ValueError),
            ("a", "", b"v", ValueError),
            ("a", "g", b"x" * (MAX_MEMBER_VALUE + 1), ValueError),
            ("a" * 2000, "g", b"v", ValueError),
            ("\ud800", "g", b"v", ValueError),
            ("a\x00b", "g", b"v", ValueError),
        ],
        ids=repr,
    )
    async def test_bad_input_raises_and_writes_nothing(
        self, backend: AsyncRendezvousBackend, node: Any, group: Any, value: Any,
        error: type[Exception],
    ) -> None:
        table = _table_of(backend)
        try:
            await table.put(node, group, value, None)
        except error:
            pass
        except Exception as exc:
            raise broken(INPUT, f"put({show(node)}, {show(group)}, {show(value)}, None) raised "
                                f"{type(exc).__name__}: {exc}, not {error.__name__}") from exc
        else:
            raise broken(INPUT, f"put({show(node)}, {show(group)}, {show(value)}, None) did "
                                f"not raise {error.__name__}")
        _check(await table.count("g") == 0, INPUT, "a refused put was counted in its group")

    # -- concurrency -----------------------------------------------------------------------------

    async def test_racing_joiners_each_see_a_different_group_size(self, open_backend: Any) -> None:
        tables = [_table_of(await open_backend()) for _ in range(4)]
        sizes: list[int] = []

        async def join(index: int) -> None:
            _, written, size = await _put(tables[index % len(tables)], f"node-{index}", "g",
                                          b"v", None)
            _check(written, CAS, f"node-{index}'s first put did not write")
            sizes.append(size)

        async with anyio.create_task_group() as group:
            for index in range(24):
                group.start_soon(join, index)
        _check(sorted(sizes) == list(range(1, 25)), SIZE,
               f"24 racing joiners saw the sizes {sorted(sizes)}, not 1..24")

    async def test_exactly_one_of_racing_writers_wins(self, open_backend: Any) -> None:
        tables = [_table_of(await open_backend()) for _ in range(8)]
        first = await _create(tables[0], "a", "g", b"start")
        results: list[tuple[int, bool]] = []

        async def write(index: int) -> None:
            _, written, _ = await _put(tables[index], "a", f"g{index}", b"w", first.version)
            results.append((index, written))

        async with anyio.create_task_group() as group:
            for index in range(len(tables)):
                group.start_soon(write, index)
        winners = [index for index, written in results if written]
        _check(len(winners) == 1, CAS,
               f"8 racing puts with the same version: writers {winners} won, not exactly one")
        current = await tables[0].get("a")
        _check(current is not None and current.group == f"g{winners[0]}", CAS,
               f"the winner was writer {winners[0]}, but the record is {_describe(current)}")

    async def test_cancelled_puts_apply_entirely_or_not_at_all(self, open_backend: Any) -> None:
        writer, reader = _table_of(await open_backend()), _table_of(await open_backend())
        member = await _create(writer, "a", "g0", b"v")
        for attempt in range(12):
            with anyio.CancelScope() as scope:
                scope.cancel()
                await writer.put("a", f"g{attempt + 1}", b"v", member.version)
            current = await reader.get("a")
            _check(current is not None, CANCEL, "a cancelled put lost the record")
            assert current is not None
            if current.version != member.version:
                _check(current.group == f"g{attempt + 1}", CANCEL,
                       f"a cancelled put was half applied: {_describe(current)}")
                member = current
            counts = [await reader.count(f"g{index}") for index in range(attempt + 2)]
            _check(sum(counts) == 1, CANCEL,
                   f"after cancelled puts the record is in {sum(counts)} groups: {counts}")
        _check((await _put(writer, "a", "after", b"v", member.version)).written, CANCEL,
               "the table no longer writes after cancelled puts")

    # -- liveness --------------------------------------------------------------------------------

    async def test_ages_come_from_the_store_clock(self, backend: AsyncRendezvousBackend) -> None:
        table = _table_of(backend)
        first = await _create(table, "a", "g", b"v")
        if not table.has_clock:
            _check(first.age is None, CLOCK, f"a table without a clock reported age {first.age}")
            return
        _check(first.age is not None and 0 <= first.age < self.timeout, CLOCK,
               f"a record just written has age {show(first.age)}")
        pause = 0.2
        await anyio.sleep(pause)  # time must pass on the store's clock; nothing races here
        aged = await table.get("a")
        assert aged is not None
        _check(aged.age is not None and aged.age >= pause - self.clock_resolution, CLOCK,
               f"{pause} s after its write the record's age reads {show(aged.age)}")
        assert aged.age is not None
        touched = await table.touch("a", aged.version)
        _check(touched is not None and touched.age is not None and touched.age < aged.age,
               CLOCK, f"a touch did not reset the age: {aged.age} then "
                      f"{show(None if touched is None else touched.age)}")
        listed = await table.members("g")
        _check(bool(listed) and listed[0].age is not None and listed[0].age < aged.age, CLOCK,
               f"members() reports an age of {show(listed[0].age if listed else None)} right "
               "after a touch")

    async def test_wait_for_change_sees_other_handles(self, open_backend: Any) -> None:
        waiter, writer = _table_of(await open_backend()), _table_of(await open_backend())
        member = await _create(writer, "a", "g", b"v")
        try:
            changed_already = await waiter.wait_for_change("a", None, timeout=0)
        except NotImplementedError:
            _check(waiter.has_clock, PUSH, "a table without a clock lacks wait_for_change()")
            return
        _check(changed_already, PUSH,
               "wait_for_change(node, None) did not return at once although a record exists")
        with anyio.fail_after(self.timeout):
            timed_out = await waiter.wait_for_change("a", member.version, timeout=0.05)
        _check(not timed_out, PUSH, "wait_for_change returned True while nothing changed")
        for action in ("touch", "put", "delete"):
            outcome: list[bool] = []

            async def wait(version: Token, outcome: list[bool] = outcome) -> None:
                outcome.append(await waiter.wait_for_change("a", version, timeout=self.timeout))

            async with anyio.create_task_group() as group:
                group.start_soon(wait, member.version)
                await anyio.wait_all_tasks_blocked()
                if action == "touch":
                    touched = await writer.touch("a", member.version)
                    assert touched is not None
                    member = touched
                elif action == "put":
                    moved, _, _ = await _put(writer, "a", "h", b"v", member.version)
                    assert moved is not None
                    member = moved
                else:
                    await writer.delete("a", member.version)
            _check(outcome == [True], PUSH,
                   f"wait_for_change missed a {action} by another handle: {outcome}")

    # -- closing ---------------------------------------------------------------------------------

    async def test_closing_the_handle_closes_its_table(self, open_backend: Any) -> None:
        handle = await open_backend()
        table = _table_of(handle)
        await _create(table, "a", "g", b"v")
        await handle.aclose()
        for call, name in ((table.get("a"), "get"), (table.put("b", "g", b"v", None), "put")):
            try:
                await call
            except BackendClosedError:
                continue
            except Exception as exc:
                raise broken(CLOSED, f"{name}() after aclose() raised {type(exc).__name__}, not "
                                     "BackendClosedError") from exc
            raise broken(CLOSED, f"{name}() after the handle's aclose() did not raise")


async def _call(call: Any, name: str) -> Any:
    """Await *call*, which must not raise: a bad version is merely not current."""
    try:
        return await call
    except Exception as exc:
        raise broken(CAS, f"{name}() raised {type(exc).__name__}: {exc} for a version that is "
                          "merely not current") from exc


async def _put(table: MemberTable, node: str, group: str, value: bytes,
               version: Any) -> Any:
    """``table.put(...)``, which must return a 3-tuple and never raise for a bad version."""
    result = await _call(table.put(node, group, value, version), "put")
    _check(isinstance(result, tuple) and len(result) == 3, CAS,
           f"put() returned {show(result)}, not (member, written, group_size)")
    return result


async def _create(table: MemberTable, node: str, group: str, value: bytes) -> Member:
    member, written, _ = await _put(table, node, group, value, None)
    if not written or not isinstance(member, Member):
        raise broken(CAS, f"put({node!r}, {group!r}, ..., None) on a node without a record "
                          f"returned {show(member)}, written={written}")
    return member


def _same(a: Member, b: Member) -> bool:
    """The same record (ages aside: time passes between two reads)."""
    return (a.node, a.group, a.value, a.version, a.seq) == (b.node, b.group, b.value, b.version,
                                                            b.seq)
