from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import pytest
from hypothesis import settings
from hypothesis.stateful import run_state_machine_as_test

import arendezvous.backends.file as file_module
from _counter_race import run_counter_race
from _forking import fork_with_locks_held
from arendezvous import (
    AsyncRendezvousBackend,
    FileBackend,
    RendezvousStateError,
    Token,
    open_backend,
)
from arendezvous.backends import _fileformat
from arendezvous.testing.conformance import CorruptStateConformance
from arendezvous.testing.lifecycle import RunLifecycleConformance
from arendezvous.testing.members import MemberTableConformance
from arendezvous.testing.stateful import backend_state_machine

from ._waiting import waiting

pytestmark = pytest.mark.anyio


class TestFileConformance(CorruptStateConformance):
    @pytest.fixture(autouse=True)
    def _directory(self, tmp_path: Path) -> None:
        self.directory = tmp_path

    async def make_backend(self, run_id: str) -> AsyncRendezvousBackend:
        return FileBackend(self.directory, run_id, durable=False, poll_interval=0.01)

    async def corrupt_state(self, run_id: str, raw: bytes) -> None:
        path = FileBackend(self.directory, run_id).path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(raw)


class TestFileLifecycle(RunLifecycleConformance):
    @pytest.fixture(autouse=True)
    def _directory(self, tmp_path: Path) -> None:
        self.directory = tmp_path

    async def make_backend(self, run_id: str) -> AsyncRendezvousBackend:
        return FileBackend(self.directory, run_id, durable=False, poll_interval=0.01)

    async def make_expiring_backend(
        self, run_id: str, expire_after: float
    ) -> AsyncRendezvousBackend:
        return FileBackend(self.directory, run_id, durable=False, expire_after=expire_after)


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
def test_state_machine(tmp_path: Path, anyio_backend: str) -> None:
    machine = backend_state_machine(
        lambda run_id: FileBackend(tmp_path, run_id, durable=False), anyio_backend=anyio_backend
    )
    run_state_machine_as_test(
        machine, settings=settings(max_examples=15, stateful_step_count=15, deadline=None)
    )


async def test_every_single_flipped_byte_is_detected(tmp_path: Path) -> None:
    backend = FileBackend(tmp_path, "flip", durable=False)
    _, token, _ = await backend.set_state(b"some rendezvous state")
    good = backend.path.read_bytes()
    for position in range(len(good)):
        for flip in (0x01, 0x80, 0xFF):
            corrupt = bytearray(good)
            corrupt[position] ^= flip
            backend.path.write_bytes(bytes(corrupt))
            with pytest.raises(RendezvousStateError):
                await backend.get_state()
    backend.path.write_bytes(good)
    assert await backend.get_state() == (b"some rendezvous state", token)


async def test_truncated_and_extended_files_are_detected(tmp_path: Path) -> None:
    backend = FileBackend(tmp_path, "trunc", durable=False)
    await backend.set_state(b"0123456789")
    good = backend.path.read_bytes()
    for bad in (good[:-1], good[: _fileformat.HEADER_SIZE], good[:3], good + b"\x00"):
        backend.path.write_bytes(bad)
        with pytest.raises(RendezvousStateError):
            await backend.get_state()
        with pytest.raises(RendezvousStateError):
            await backend.set_state(b"x", None)
        assert backend.path.read_bytes() == bad  # nothing was written over it


async def test_unknown_format_version_is_refused(tmp_path: Path) -> None:
    backend = FileBackend(tmp_path, "version", durable=False)
    await backend.set_state(b"x")
    data = bytearray(backend.path.read_bytes())
    data[4] = 99
    backend.path.write_bytes(bytes(data))
    with pytest.raises(RendezvousStateError, match="version 99"):
        await backend.get_state()


async def test_files_are_private_to_their_owner(tmp_path: Path) -> None:
    directory = tmp_path / "new" / "dir"
    backend = FileBackend(directory, "perm")
    await backend.set_state(b"secret")
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE(backend.path.stat().st_mode) == 0o600
    assert sorted(p.name for p in directory.iterdir()) == ["perm.lock", "perm.rdzv"]
    assert stat.S_IMODE((directory / "perm.lock").stat().st_mode) == 0o600


@pytest.mark.parametrize("run_id", ["a/b", "..", ".hidden", "x" * 500, "ümlaut run", "a%2Fb"])
async def test_any_run_id_maps_to_its_own_file(tmp_path: Path, run_id: str) -> None:
    backend = FileBackend(tmp_path, run_id, durable=False)
    neighbour = FileBackend(tmp_path, run_id + "!", durable=False)
    await backend.set_state(b"mine")
    assert backend.path.parent == tmp_path
    assert len(backend.path.name) < 255
    assert await neighbour.get_state() is None


async def test_recreated_file_never_repeats_a_token(tmp_path: Path) -> None:
    backend = FileBackend(tmp_path, "aba", durable=False)
    _, first, _ = await backend.set_state(b"same")
    backend.path.unlink()
    _, second, _ = await backend.set_state(b"same")
    assert first != second
    assert await backend.set_state(b"other", first) == (b"same", second, False)


async def test_wait_for_change_sees_another_process(tmp_path: Path) -> None:
    backend = FileBackend(tmp_path, "xproc", durable=False, poll_interval=0.01)
    _, token, _ = await backend.set_state(b"before")
    script = (
        "import anyio, sys\n"
        "from arendezvous import FileBackend\n"
        "async def main():\n"
        "    b = FileBackend(sys.argv[1], 'xproc', durable=False)\n"
        "    s, t = await b.get_state()\n"
        "    print((await b.set_state(b'after', t))[2])\n"
        "anyio.run(main)\n"
    )
    async with anyio.create_task_group() as group:
        result: list[object] = []

        async def wait() -> None:
            result.append(await backend.wait_for_change(token, timeout=30))

        group.start_soon(wait)
        await anyio.wait_all_tasks_blocked()
        completed = await anyio.run_process([sys.executable, "-c", script, str(tmp_path)])
        assert completed.stdout.strip() == b"True"
    changed = result[0]
    assert isinstance(changed, tuple)
    assert changed[0] == b"after"


def test_no_lost_update_across_processes(tmp_path: Path) -> None:
    count, conflicts = run_counter_race(f"file://{tmp_path}", "counter", processes=4, increments=50)
    assert count == 4 * 50
    assert conflicts >= 0


_KILLED_WRITER = """
import os, sys
from arendezvous import SyncBackend, FileBackend
backend = SyncBackend(FileBackend(sys.argv[1], "kill"))
state, token = backend.get_state()
n = int(state.rstrip(b"."))
print("writing", flush=True)
while True:
    state, token, ok = backend.set_state(b"%d" % (n + 1) + b"." * 4096, token)
    n = int(state.rstrip(b"."))
"""


def test_writer_killed_mid_write_leaves_old_or_new_state(tmp_path: Path) -> None:
    """SIGKILL a writer at arbitrary points of its write loop; the file always decodes."""
    seed = FileBackend(tmp_path, "kill")
    anyio.run(seed.set_state, b"0")
    last_seen = 0
    for round_ in range(8):
        writer = subprocess.Popen(
            [sys.executable, "-c", _KILLED_WRITER, str(tmp_path)], stdout=subprocess.PIPE
        )
        assert writer.stdout is not None
        assert writer.stdout.readline().strip() == b"writing"
        # kill after a varying number of completed writes: wait for the file to change a few times
        reader = FileBackend(tmp_path, "kill")
        current = anyio.run(reader.get_state)
        assert current is not None
        for _ in range(1 + round_ % 5):
            changed = anyio.run(reader.wait_for_change, current[1])
            assert changed is not None
            current = changed
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()
        final = anyio.run(reader.get_state)  # decodes: never torn
        assert final is not None
        value = int(final[0].rstrip(b"."))
        assert value >= last_seen
        last_seen = value
    assert last_seen > 0


def test_url_options() -> None:
    backend = open_backend("file:///tmp/rdzv?durable=false&poll_interval=0.2", run_id="r")
    assert isinstance(backend, FileBackend)
    assert backend.path == Path("/tmp/rdzv/r.rdzv")
    assert isinstance(open_backend("file://localhost/tmp/rdzv", run_id="r"), FileBackend)
    with pytest.raises(ValueError, match="name a local directory"):
        open_backend("file://relative/dir", run_id="r")
    with pytest.raises(ValueError, match="absolute"):
        open_backend("file://", run_id="r")
    # A password typed into the path is refused, unrepeated; an encoded '@' names a directory.
    with pytest.raises(ValueError, match="no user or password") as refused:
        open_backend("file:///:Pw99wP@127.0.0.1/dir", run_id="r")
    assert "Pw99wP" not in str(refused.value)
    at = open_backend("file:///tmp/me%40work", run_id="r")
    assert isinstance(at, FileBackend)
    assert at.path == Path("/tmp/me@work/r.rdzv")
    with pytest.raises(ValueError, match="bad value for option 'durable'"):
        open_backend("file:///tmp/x?durable=maybe", run_id="r")
    with pytest.raises(ValueError, match="bad value for option 'poll_interval'"):
        open_backend("file:///tmp/x?poll_interval=-1", run_id="r")
    with pytest.raises(ValueError, match="unknown option 'fsync'"):
        open_backend("file:///tmp/x?fsync=1", run_id="r")
    with pytest.raises(ValueError, match="poll_interval"):
        FileBackend("/tmp/x", "r", poll_interval=0)


async def test_unreadable_directory_raises_connection_error(tmp_path: Path) -> None:
    from arendezvous import RendezvousConnectionError

    blocker = tmp_path / "not-a-dir"
    blocker.write_bytes(b"")
    backend = FileBackend(blocker, "r")
    with pytest.raises(RendezvousConnectionError) as info:
        await backend.set_state(b"x")
    assert info.value.__cause__ is not None
    with pytest.raises(RendezvousConnectionError):
        await backend.get_state()


class TestFileMembers(MemberTableConformance):
    async def make_backend(self, run_id: str) -> AsyncRendezvousBackend:
        return FileBackend(self.directory, run_id, durable=False)

    @pytest.fixture(autouse=True)
    def _directory(self, tmp_path: Path) -> None:
        self.directory = tmp_path


# -- the run lifecycle ----------------------------------------------------------------------------


def _names(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


def _age_files(backend: FileBackend, seconds: float) -> None:
    """Set the modification times of the run's files *seconds* into the past (instead of waiting
    that long)."""
    past = time.time() - seconds
    for path in (backend._files.state, backend._files.members, backend._files.lock):
        if path.exists():
            os.utime(path, (past, past))


async def _populate(backend: FileBackend) -> tuple[Token, Token]:
    _, token, _ = await backend.set_state(b"state")
    member, _, _ = await backend.member_table().put("node", "group", b"v", None)
    assert member is not None
    return token, member.version


async def test_deleting_removes_every_file_of_the_run(tmp_path: Path) -> None:
    backend = FileBackend(tmp_path, "doomed", durable=False)
    other = FileBackend(tmp_path, "kept", durable=False)
    await _populate(backend)
    await other.set_state(b"other")
    assert await backend.delete_run() is True
    assert _names(tmp_path) == ["kept.lock", "kept.rdzv"]
    assert await backend.delete_run() is False
    assert _names(tmp_path) == ["kept.lock", "kept.rdzv"]


async def test_deleting_wakes_waiters_in_this_process(tmp_path: Path) -> None:
    backend = FileBackend(tmp_path, "woken", durable=False, poll_interval=60)
    _, token, _ = await backend.set_state(b"first")
    member, _, _ = await backend.member_table().put("node", "group", b"v", None)
    assert member is not None
    async with waiting(backend, token, timeout=30) as results:
        await anyio.wait_all_tasks_blocked()
        await backend.delete_run()
        # No state exists to report: the waiter re-read and waits on, until the run is created
        # again (a poll_interval of a minute: only the in-process notice can wake it in time).
        _, new_token, _ = await backend.set_state(b"again")
    assert results == [(b"again", new_token)]


@pytest.mark.skipif(not Path("/proc/locks").exists(), reason="needs Linux's /proc/locks")
def test_a_writer_that_locked_a_deleted_lock_file_locks_the_new_one(tmp_path: Path) -> None:
    """The race delete_run() creates: a writer waits on the lock file; the run is deleted (the
    lock file with it) and another writer creates a new lock file and holds it. When the first
    writer gets the old file's lock, it must notice and wait for the new one, or two writers
    would be in the run's critical section at once."""
    deleter, late, holder = (FileBackend(tmp_path, "race", durable=False) for _ in range(3))
    anyio.run(deleter.set_state, b"old")
    in_section, delete_now = threading.Event(), threading.Event()
    holding, release = threading.Event(), threading.Event()
    results: list[tuple[bytes, Token, bool]] = []
    threads: list[threading.Thread] = []

    def hold_new_lock() -> None:
        holding.set()
        assert release.wait(30)

    def delete_holding_the_lock() -> None:
        def section() -> None:
            in_section.set()
            assert delete_now.wait(30)
            # What delete_run() does, stopped before it releases the old lock: the lock file is
            # gone, and the next writer makes and holds a new one.
            deleter._files.state.unlink()
            deleter._files.lock.unlink()
            new_writer = threading.Thread(target=holder._files.locked, args=(hold_new_lock,))
            new_writer.start()
            assert holding.wait(30)
            threads.append(new_writer)

        deleter._files.locked(section)

    first = threading.Thread(target=delete_holding_the_lock)
    first.start()
    assert in_section.wait(30)
    waiter = threading.Thread(
        target=lambda: results.append(late._compare_and_set_sync(b"late", None))
    )
    waiter.start()
    old_inode = deleter._files.lock.stat().st_ino
    _wait_for_lock_waiter(old_inode)  # the late writer waits on the old lock file
    delete_now.set()
    first.join(30)
    new_inode = holder._files.lock.stat().st_ino
    assert new_inode != old_inode
    # It got the old file's lock, noticed, and now waits for the new file's holder.
    _wait_for_lock_waiter(new_inode)
    assert results == []
    release.set()
    for thread in (*threads, waiter):
        thread.join(30)
    [(state, _, written)] = results
    assert (state, written) == (b"late", True)  # the run was gone: the late writer created it


def _wait_for_lock_waiter(inode: int) -> None:
    """Return once a process waits for a flock on the file *inode* (``->`` in /proc/locks)."""
    deadline = time.monotonic() + 30
    while not any(line.split()[1] == "->" and line.split()[6].endswith(f":{inode}")
                  for line in Path("/proc/locks").read_text().splitlines()):
        assert time.monotonic() < deadline, f"nobody waits for a lock on inode {inode}"
        time.sleep(0.01)  # poll-ok: the kernel announces a lock waiter only in /proc/locks


async def test_an_expired_run_is_removed_by_a_read(tmp_path: Path) -> None:
    backend = FileBackend(tmp_path, "idle", durable=False, expire_after=60)
    plain = FileBackend(tmp_path, "idle", durable=False)
    await _populate(backend)
    _age_files(backend, 59)
    assert await backend.get_state() is not None  # not yet
    _age_files(backend, 61)
    assert await plain.get_state() is not None  # a handle without expire_after removes nothing
    assert await backend.member_table().get("node") is None
    assert _names(tmp_path) == []
    assert await backend.get_state() is None


async def test_member_writes_keep_a_run_alive(tmp_path: Path) -> None:
    backend = FileBackend(tmp_path, "alive", durable=False, expire_after=60)
    _, version = await _populate(backend)
    _age_files(backend, 3600)
    # A heartbeat a moment ago: the state file is old, the run is not.
    os.utime(backend._files.members)
    current = await backend.get_state()
    assert current is not None
    assert current[0] == b"state"
    assert await backend.member_table().touch("node", version) is not None


async def test_a_write_to_an_expired_run_starts_it_afresh(tmp_path: Path) -> None:
    backend = FileBackend(tmp_path, "stale", durable=False, expire_after=60)
    token, version = await _populate(backend)
    _age_files(backend, 61)
    assert await backend.set_state(b"late", token) == (b"", None, False)
    assert not backend._files.members.exists()  # the member records went with it
    _, new_token, written = await backend.set_state(b"new")
    assert written
    assert new_token != token
    _age_files(backend, 61)
    put = await backend.member_table().put("node", "group", b"v", version)
    assert put == (None, False, 0)  # expired by the member write: the old version is nothing
    assert await backend.get_state() is None


async def test_listing_removes_expired_runs(tmp_path: Path) -> None:
    lister = FileBackend(tmp_path, "lister", durable=False, expire_after=60)
    old, fresh = (FileBackend(tmp_path, name, durable=False) for name in ("old", "fresh"))
    await _populate(old)
    await fresh.set_state(b"12345")
    _age_files(old, 61)
    leftover = FileBackend(tmp_path, "only-a-lock", durable=False)
    assert await leftover.set_state(b"x", "not a token") == (b"", None, False)  # made a lock file
    _age_files(leftover, 61)
    runs = await lister.list_runs()
    assert [(run.run_id, run.size, run.members) for run in runs] == [("fresh", 5, 0)]
    age = runs[0].age
    assert age is not None
    assert 0 <= age < 60
    assert _names(tmp_path) == ["fresh.lock", "fresh.rdzv"]


@pytest.mark.parametrize(
    "run_id", ["a/b", "..", ".hidden", "x" * 500, "ümlaut run", "a%2Fb", "~" * 200, "a.lock"]
)
async def test_listing_names_any_run_id(tmp_path: Path, run_id: str) -> None:
    backend = FileBackend(tmp_path, run_id, durable=False)
    await _populate(backend)
    [run] = await backend.list_runs()
    assert (run.run_id, run.size, run.members) == (run_id, 5, 1)
    assert await FileBackend(tmp_path, run.run_id).delete_run() is True


async def test_listing_ignores_what_is_not_a_run(tmp_path: Path) -> None:
    backend = FileBackend(tmp_path, "run", durable=False)
    await backend.set_state(b"x")
    (tmp_path / "notes.txt").write_text("an operator's notes")
    (tmp_path / ".run.rdzv.0123abcd.tmp").write_bytes(b"a write in progress")
    (tmp_path / "%ZZ.rdzv").write_bytes(b"a name no run id maps to")
    (tmp_path / "subdirectory").mkdir()
    assert [run.run_id for run in await backend.list_runs()] == ["run"]
    assert await FileBackend(tmp_path / "missing", "run").list_runs() == []


async def test_a_damaged_member_file_is_listed_without_a_count(tmp_path: Path) -> None:
    backend = FileBackend(tmp_path, "damaged", durable=False)
    await _populate(backend)
    backend._files.members.write_bytes(b"garbage")
    [run] = await backend.list_runs()
    assert (run.run_id, run.size, run.members) == ("damaged", 5, None)


async def test_a_long_run_id_from_before_lock_files_held_it(tmp_path: Path) -> None:
    """Lock files of older versions are empty: a hashed name is then listed under an id that maps
    to the same files, so that it can still be inspected and deleted."""
    run_id = "job-" + "x" * 300
    backend = FileBackend(tmp_path, run_id, durable=False)
    await backend.set_state(b"x")
    backend._files.lock.write_bytes(b"")
    [run] = await backend.list_runs()
    alias = FileBackend(tmp_path, run.run_id)
    assert alias.path == backend.path
    assert await alias.delete_run() is True


def test_expire_after_option() -> None:
    backend = open_backend("file:///tmp/rdzv?expire_after=3600", run_id="r")
    assert isinstance(backend, FileBackend)
    assert backend.expire_after == 3600
    assert FileBackend("/tmp/rdzv", "r").expire_after is None
    with pytest.raises(ValueError, match="bad value for option 'expire_after'"):
        open_backend("file:///tmp/rdzv?expire_after=0", run_id="r")
    with pytest.raises(ValueError, match="positive"):
        FileBackend("/tmp/rdzv", "r", expire_after=-1)
    with pytest.raises(TypeError, match="expire_after"):
        FileBackend("/tmp/rdzv", "r", expire_after="60")  # type: ignore[arg-type]


# -- what the backend finds at its paths is not trusted ----------------------------------------


def _within(seconds: float, function: Callable[[], Awaitable[object]], fifo: Path) -> object:
    """Await *function()* on a loop of its own, in a thread; return what it returned or raised.

    A call blocked on the FIFO *fifo* (an ``open`` waiting for a writer) cannot be cancelled: if
    it is still running after *seconds*, a writer opens the FIFO to let it go, and the test fails.
    """
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(anyio.run(function))
        except BaseException as exc:  # what it is, is the point
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # a writer: the open returns
        thread.join(30)
        pytest.fail(f"the call was still blocked on the FIFO {fifo} after {seconds} s")
    return outcome[0]


def _refused(outcome: object, path: Path) -> None:
    assert isinstance(outcome, RendezvousStateError), outcome
    assert str(path) in str(outcome)


@pytest.mark.parametrize("which", ["state", "members", "lock"])
def test_a_fifo_at_a_runs_path_is_refused_without_blocking(tmp_path: Path, which: str) -> None:
    """A FIFO at the state, member or lock file's path would block an ``open`` for reading
    until a writer comes: every call refuses it at once, naming it, and leaves it there."""
    backend = FileBackend(tmp_path, "fifo", durable=False)
    fifo = {"state": backend.path, "members": tmp_path / "fifo.members",
            "lock": tmp_path / "fifo.lock"}[which]
    os.mkfifo(fifo, 0o600)
    table = backend.member_table()
    read_state, write_state = backend.get_state, lambda: backend.set_state(b"x")
    read_member, write_member = (lambda: table.get("node"),
                                 lambda: table.put("node", "group", b"v", None))
    by_path: dict[str, list[Callable[[], Awaitable[object]]]] = {
        "state": [read_state, write_state],
        "members": [read_member, write_member],
        "lock": [write_state, write_member],  # writers take the lock, readers do not
    }
    calls = by_path[which]
    for call in calls:
        _refused(_within(10, call, fifo), fifo)
        assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_a_fifo_as_a_hashed_runs_lock_file_does_not_block_listing(tmp_path: Path) -> None:
    """Listing reads a hashed run's lock file to name it: a FIFO there is skipped, not read."""
    backend = FileBackend(tmp_path, "r" * 300, durable=False)
    anyio.run(backend.set_state, b"x")
    lock = backend.path.with_suffix(".lock")
    lock.unlink()
    os.mkfifo(lock, 0o600)
    runs = _within(10, backend.list_runs, lock)
    assert isinstance(runs, list), runs
    assert stat.S_ISFIFO(os.lstat(lock).st_mode)


@pytest.mark.parametrize("which", ["state", "members"])
def test_a_device_at_a_runs_path_is_refused(tmp_path: Path, which: str) -> None:
    """A symbolic link to ``/dev/zero`` would be read until memory runs out; devices and
    directories are refused before reading, while a link to a regular file is followed."""
    backend = FileBackend(tmp_path, "device", durable=False)
    path = backend.path if which == "state" else tmp_path / "device.members"
    table = backend.member_table()
    read = backend.get_state if which == "state" else lambda: table.get("node")
    write = (lambda: backend.set_state(b"x")) if which == "state" else (
        lambda: table.put("node", "group", b"v", None))
    path.symlink_to("/dev/zero")
    for call in (read, write):
        _refused(_within(10, call, path), path)
        assert os.readlink(path) == "/dev/zero"
    path.unlink()
    path.mkdir()
    for call in (read, write):
        _refused(_within(10, call, path), path)
        assert path.is_dir()
    path.rmdir()
    elsewhere = tmp_path / "elsewhere"
    anyio.run(write)
    os.replace(path, elsewhere)
    path.symlink_to(elsewhere)
    assert anyio.run(read) is not None  # a link to a regular file is read


def test_an_oversize_state_file_is_refused_before_it_is_read(tmp_path: Path) -> None:
    """A huge (sparse) file is refused by its size, never read whole; a file whose header
    declares more than the handle's limit is refused too. Neither is touched."""
    backend = FileBackend(tmp_path, "big", durable=False, max_state_size=1000)
    with open(backend.path, "wb") as file:
        file.truncate(512 << 20)
    before = os.stat(backend.path)
    tracemalloc.start()
    try:
        for call in (backend.get_state, lambda: backend.set_state(b"x")):
            _refused(_within(10, call, backend.path), backend.path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, f"{peak} bytes allocated: the file was read"
    after = os.stat(backend.path)
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
        before.st_ino, before.st_size, before.st_mtime_ns)

    backend.path.write_bytes(_fileformat.encode(os.urandom(16), 1, b"s" * 1001))
    for call in (backend.get_state, lambda: backend.set_state(b"x")):
        _refused(_within(10, call, backend.path), backend.path)
    backend.path.write_bytes(_fileformat.encode(os.urandom(16), 1, b"s" * 1000))
    assert anyio.run(backend.get_state) is not None  # at the limit: accepted


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork() is POSIX-only")
@pytest.mark.filterwarnings("ignore:.*fork:DeprecationWarning")
def test_a_fork_while_a_handles_locks_are_held_leaves_a_usable_child(tmp_path: Path) -> None:
    """A thread holding the handle's thread lock and the process's change notifier's lock at
    the fork: the child still writes, and wakes waiters (the locks are renewed there)."""
    backend = FileBackend(tmp_path, "fork-held", durable=False)
    anyio.run(backend.set_state, b"parent")
    notifier = file_module._local_changes

    def child() -> None:
        async def use() -> None:
            with notifier.watching("another key"):  # the write's notify() takes the lock
                current = await backend.get_state()
                assert current is not None
                assert (await backend.set_state(b"child", current[1]))[2]
        anyio.run(use)

    assert fork_with_locks_held([backend._files._thread_lock, notifier._lock], child) == 0
    current = anyio.run(backend.get_state)
    assert current is not None
    assert current[0] == b"child"
