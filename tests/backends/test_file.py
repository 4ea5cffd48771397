from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from hypothesis import settings
from hypothesis.stateful import run_state_machine_as_test

from _counter_race import run_counter_race
from arendezvous import (
    AsyncRendezvousBackend,
    FileBackend,
    RendezvousStateError,
    open_backend,
)
from arendezvous.backends import _fileformat
from arendezvous.testing.conformance import CorruptStateConformance
from arendezvous.testing.members import MemberTableConformance
from arendezvous.testing.stateful import backend_state_machine

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
