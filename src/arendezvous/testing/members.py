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

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, ClassVar

import anyio
import pytest

from .._backend import AsyncRendezvousBackend, Token
from .._errors import BackendClosedError
from .._members import MAX_MEMBER_VALUE, Member, MemberTable

__all__ = ("MemberTableConformance", "OpenTable")

OpenTable = Callable[..., Awaitable[MemberTable]]
"""``await open_table(run_id=None)``: the table of a new handle; ``None`` means the test's run."""

_GARBAGE_VERSIONS: tuple[Any, ...] = ("invalid", 0, 1, -1, 2**70, b"x", 1.5, (1, 2), object(),
                                      ["unhashable"])


def _describe(member: Member | None) -> str:
    return "no record" if member is None else (
        f"record of {member.node!r} in group {member.group!r} at version {member.version!r}"
    )


class MemberTableConformance:
    """The member table's behaviours as pytest tests; subclass and implement
    :meth:`make_backend`."""

    pytestmark: ClassVar[Any] = pytest.mark.anyio

    #: How long a test waits for something that should happen promptly (seconds).
    timeout: ClassVar[float] = 10.0
    #: How far a store's clock may read behind real time when a record is read right after it
    #: was written (seconds): store clocks tick in microseconds or milliseconds.
    clock_resolution: ClassVar[float] = 0.01

    async def make_backend(self, run_id: str) -> AsyncRendezvousBackend:
        """Return a new, open handle on the run *run_id* whose ``member_table()`` is a table."""
        raise NotImplementedError("subclasses of MemberTableConformance implement make_backend()")

    @pytest.fixture
    def run_id(self) -> str:
        """A fresh run id per test."""
        return f"members-{uuid.uuid4().hex}"

    @pytest.fixture
    async def handles(self) -> AsyncIterator[list[AsyncRendezvousBackend]]:
        """Every handle a test opens, closed when it ends."""
        opened: list[AsyncRendezvousBackend] = []
        yield opened
        for handle in opened:
            await handle.aclose()

    @pytest.fixture
    def open_table(self, run_id: str, handles: list[AsyncRendezvousBackend]) -> OpenTable:
        """A factory of tables, each from a handle of its own."""

        async def open_one(other_run_id: str | None = None) -> MemberTable:
            handle = await self.make_backend(other_run_id or run_id)
            handles.append(handle)
            table = handle.member_table()
            assert table is not None, (
                f"{type(handle).__name__}.member_table() returned None: the backend does not "
                "offer the member-table capability this suite tests"
            )
            return table

        return open_one

    @pytest.fixture
    async def table(self, open_table: OpenTable) -> MemberTable:
        """One table on the test's run."""
        return await open_table()

    # -- reading and writing ---------------------------------------------------------------------

    async def test_has_clock_is_declared(self, table: MemberTable) -> None:
        assert isinstance(table.has_clock, bool), "has_clock must be a bool class attribute"

    async def test_get_of_an_unknown_node_is_none(self, table: MemberTable) -> None:
        assert await table.get("nobody") is None
        assert await table.members("empty-group") == []
        assert await table.count("empty-group") == 0

    async def test_put_creates_a_record(self, table: MemberTable) -> None:
        member, written, size = await table.put("a", "g1", b"owner-a", None)
        assert written, "put(version=None) on a node without a record must create it"
        assert size == 1, f"the group's size after the first put must be 1, not {size}"
        assert member is not None
        assert (member.node, member.group, member.value) == ("a", "g1", b"owner-a")
        got = await table.get("a")
        assert got == _same_but_age(member, got), f"get() returned {_describe(got)}"
        assert await table.count("g1") == 1

    async def test_create_only_put_loses_to_an_existing_record(self, table: MemberTable) -> None:
        first, _, _ = await table.put("a", "g1", b"first", None)
        assert first is not None
        member, written, size = await table.put("a", "g2", b"second", None)
        assert not written, "put(version=None) must not replace an existing record"
        assert size == 0
        assert member is not None, "a losing put must return the current record, not None"
        assert member.version == first.version, (
            f"a losing put must return the current record, got {_describe(member)}"
        )
        assert member.value == b"first"
        assert await table.count("g2") == 0

    async def test_put_with_the_current_version_moves_the_record(self, table: MemberTable) -> None:
        first, _, _ = await table.put("a", "g1", b"v", None)
        assert first is not None
        moved, written, size = await table.put("a", "g2", b"w", first.version)
        assert written
        assert moved is not None
        assert size == 1
        assert moved.version != first.version, "a put must give the record a new version"
        assert moved.seq > first.seq, "a put must give the record a greater seq"
        assert (moved.group, moved.value) == ("g2", b"w")
        assert await table.count("g1") == 0
        assert await table.count("g2") == 1

    @pytest.mark.parametrize("garbage", _GARBAGE_VERSIONS, ids=repr)
    async def test_stale_or_garbage_versions_never_write_nor_raise(
        self, table: MemberTable, garbage: Any
    ) -> None:
        first, _, _ = await table.put("a", "g1", b"v", None)
        assert first is not None
        member, written, _ = await table.put("a", "g2", b"w", garbage)
        assert not written, f"put with version {garbage!r} wrote over {_describe(first)}"
        assert member is not None
        assert member.version == first.version
        assert await table.touch("a", garbage) is None
        assert await table.delete("a", garbage) is False
        assert await table.put("nobody", "g1", b"v", garbage) == (None, False, 0)
        current = await table.get("a")
        assert current is not None
        assert current.version == first.version

    async def test_versions_never_repeat(self, table: MemberTable) -> None:
        member, _, _ = await table.put("a", "g", b"v", None)
        assert member is not None
        seen: list[Token] = [member.version]
        for step in range(12):
            if step % 3 == 2:
                assert await table.delete("a", member.version)
                member, _, _ = await table.put("a", "g", b"v", None)
            elif step % 3 == 1:
                member = await table.touch("a", member.version)
            else:
                member, _written, _ = await table.put("a", "g", b"v", member.version)
            assert member is not None
            repeated = [earlier for earlier in seen if earlier == member.version]
            assert not repeated, f"version {member.version!r} was issued twice: ABA"
            seen.append(member.version)
        for old in seen[:-1]:
            assert await table.touch("a", old) is None, f"stale version {old!r} still touches"

    async def test_touch_refreshes_without_moving(self, table: MemberTable) -> None:
        first, _, _ = await table.put("a", "g", b"v", None)
        assert first is not None
        touched = await table.touch("a", first.version)
        assert touched is not None
        assert touched.version != first.version, "a touch must give the record a new version"
        assert (touched.group, touched.value, touched.seq) == (first.group, first.value, first.seq)
        assert await table.touch("a", first.version) is None
        current = await table.get("a")
        assert current is not None
        assert current.version == touched.version

    async def test_delete_needs_the_current_version(self, table: MemberTable) -> None:
        first, _, _ = await table.put("a", "g", b"v", None)
        assert first is not None
        touched = await table.touch("a", first.version)
        assert touched is not None
        assert not await table.delete("a", first.version)
        assert await table.delete("a", touched.version)
        assert await table.get("a") is None
        assert await table.count("g") == 0
        assert not await table.delete("a", touched.version)
        assert await table.touch("a", touched.version) is None

    async def test_members_are_in_arrival_order(self, table: MemberTable) -> None:
        for node in ("c", "a", "b"):
            await table.put(node, "g", node.encode(), None)
        await table.put("x", "other", b"x", None)
        listed = await table.members("g")
        assert [member.node for member in listed] == ["c", "a", "b"]
        assert [member.seq for member in listed] == sorted(member.seq for member in listed)
        assert all(member.group == "g" for member in listed)
        assert await table.count("g") == 3
        assert await table.count("other") == 1

    async def test_handles_on_one_run_share_records(self, open_table: OpenTable) -> None:
        first, second = await open_table(), await open_table()
        member, _, _ = await first.put("a", "g", b"v", None)
        assert member is not None
        seen = await second.get("a")
        assert seen is not None
        assert seen.version == member.version
        touched = await second.touch("a", member.version)
        assert touched is not None
        assert await first.touch("a", member.version) is None

    async def test_runs_are_isolated(self, open_table: OpenTable, run_id: str) -> None:
        mine, other = await open_table(), await open_table(run_id + "-other")
        member, _, _ = await mine.put("a", "g", b"v", None)
        assert member is not None
        assert await other.get("a") is None
        assert await other.count("g") == 0
        assert await other.touch("a", member.version) is None

    async def test_value_at_the_limit_round_trips(self, table: MemberTable) -> None:
        value = bytes(range(256)) * (MAX_MEMBER_VALUE // 256)
        member, written, _ = await table.put("\u00e9t\u00e9 node/with:odd#chars", "g/\u00e9",
                                             value, None)
        assert written
        assert member is not None
        got = await table.get("\u00e9t\u00e9 node/with:odd#chars")
        assert got is not None
        assert got.value == value
        assert got.group == "g/\u00e9"

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
        ],
    )
    async def test_bad_input_raises_and_writes_nothing(
        self, table: MemberTable, node: Any, group: Any, value: Any, error: type[Exception]
    ) -> None:
        with pytest.raises(error):
            await table.put(node, group, value, None)
        assert await table.count("g") == 0
        if isinstance(node, str) and node and len(node) < 1024 and node.isascii():
            assert await table.get(node) is None

    # -- concurrency -----------------------------------------------------------------------------

    async def test_racing_joiners_each_see_a_different_group_size(
        self, open_table: OpenTable
    ) -> None:
        tables = [await open_table() for _ in range(4)]
        sizes: list[int] = []

        async def join(index: int) -> None:
            _, written, size = await tables[index % len(tables)].put(
                f"node-{index}", "g", b"v", None
            )
            assert written
            sizes.append(size)

        async with anyio.create_task_group() as group:
            for index in range(24):
                group.start_soon(join, index)
        assert sorted(sizes) == list(range(1, 25)), (
            "group sizes must be counted atomically with each put: racing joiners saw "
            f"{sorted(sizes)}"
        )

    async def test_exactly_one_of_racing_writers_wins(self, open_table: OpenTable) -> None:
        tables = [await open_table() for _ in range(8)]
        first, _, _ = await tables[0].put("a", "g", b"start", None)
        assert first is not None
        results: list[tuple[int, bool]] = []

        async def write(index: int) -> None:
            _, written, _ = await tables[index].put("a", f"g{index}", b"w", first.version)
            results.append((index, written))

        async with anyio.create_task_group() as group:
            for index in range(len(tables)):
                group.start_soon(write, index)
        winners = [index for index, written in results if written]
        assert len(winners) == 1, f"expected exactly one winner, got {winners}"
        current = await tables[0].get("a")
        assert current is not None
        assert current.group == f"g{winners[0]}"

    async def test_cancelled_puts_apply_entirely_or_not_at_all(
        self, open_table: OpenTable
    ) -> None:
        writer, reader = await open_table(), await open_table()
        member, _, _ = await writer.put("a", "g0", b"v", None)
        assert member is not None
        for attempt in range(12):
            with anyio.CancelScope() as scope:
                scope.cancel()
                await writer.put("a", f"g{attempt + 1}", b"v", member.version)
            current = await reader.get("a")
            assert current is not None
            if current.version != member.version:
                assert current.group == f"g{attempt + 1}", "a cancelled put was half applied"
                member = current
            groups = [await reader.count(f"g{index}") for index in range(attempt + 2)]
            assert sum(groups) == 1, f"the record is in {sum(groups)} groups at once: {groups}"
        assert (await writer.put("a", "after", b"v", member.version)).written

    # -- liveness --------------------------------------------------------------------------------

    async def test_ages_come_from_the_store_clock(self, table: MemberTable) -> None:
        first, _, _ = await table.put("a", "g", b"v", None)
        assert first is not None
        if not table.has_clock:
            assert first.age is None, "a table without a clock must report age None"
            return
        assert first.age is not None
        assert 0 <= first.age < self.timeout
        pause = 0.2
        await anyio.sleep(pause)  # time must pass on the store's clock; nothing races here
        aged = await table.get("a")
        assert aged is not None
        assert aged.age is not None
        assert aged.age >= pause - self.clock_resolution, (
            f"after {pause} s the record's age reads {aged.age}: not the store's elapsed time"
        )
        touched = await table.touch("a", aged.version)
        assert touched is not None
        assert touched.age is not None
        assert touched.age < aged.age, "a touch must reset the record's age"
        listed = await table.members("g")
        assert listed[0].age is not None
        assert listed[0].age < aged.age

    async def test_wait_for_change_sees_other_handles(self, open_table: OpenTable) -> None:
        waiter, writer = await open_table(), await open_table()
        member, _, _ = await writer.put("a", "g", b"v", None)
        assert member is not None
        try:
            changed_already = await waiter.wait_for_change("a", None, timeout=0)
        except NotImplementedError:
            assert waiter.has_clock, "a table without a clock must implement wait_for_change"
            return
        assert changed_already, "wait_for_change(None) must return at once when a record exists"
        with anyio.fail_after(self.timeout):
            assert not await waiter.wait_for_change("a", member.version, timeout=0.05)
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
                    moved, _, _ = await writer.put("a", "h", b"v", member.version)
                    assert moved is not None
                    member = moved
                else:
                    assert await writer.delete("a", member.version)
            assert outcome == [True], f"wait_for_change missed a {action} by another handle"

    # -- closing ---------------------------------------------------------------------------------

    async def test_closing_the_handle_closes_its_table(
        self, run_id: str, handles: list[AsyncRendezvousBackend]
    ) -> None:
        handle = await self.make_backend(run_id)
        handles.append(handle)
        table = handle.member_table()
        assert table is not None
        await table.put("a", "g", b"v", None)
        await handle.aclose()
        with pytest.raises(BackendClosedError):
            await table.get("a")
        with pytest.raises(BackendClosedError):
            await table.put("b", "g", b"v", None)


def _same_but_age(expected: Member, actual: Member | None) -> Member | None:
    """*expected* with *actual*'s age, so records compare without the time that passed."""
    if actual is None:
        return None
    return Member(expected.node, expected.group, expected.value, expected.version, expected.seq,
                  actual.age)
