"""The arendezvous test kit on the SQLite backend: everything a backend author has to write."""

from __future__ import annotations

import sqlite3
import tempfile
from contextlib import closing
from pathlib import Path

import anyio
import pytest
from arendezvous import open_backend
from arendezvous.testing import (
    CorruptStateConformance,
    FaultyBackend,
    Recorder,
    RecordingBackend,
    backend_state_machine,
    check,
)
from hypothesis import settings

from arendezvous_sqlite import SCHEMA, SQLiteBackend


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Every conformance test runs on both event loops."""
    return str(request.param)


class TestSQLiteBackend(CorruptStateConformance):
    """The contract's promises, including corrupt stored bytes."""

    @pytest.fixture(autouse=True)
    def _database(self, tmp_path: Path) -> None:
        self.path = tmp_path / "rendezvous.sqlite3"

    async def make_backend(self, run_id: str) -> SQLiteBackend:
        return SQLiteBackend(self.path, run_id, poll_interval=0.01)

    async def corrupt_state(self, run_id: str, raw: bytes) -> None:
        # Behind the backend's back: SQLite's own client writes the raw record.
        with closing(sqlite3.connect(self.path)) as db, db:
            db.execute(SCHEMA)
            db.execute(
                "INSERT OR REPLACE INTO arendezvous_runs VALUES (?, ?, ?)", (run_id, raw, "t")
            )


# The state machine: racing writers against a model of the register, on each loop.
_directory = tempfile.TemporaryDirectory()
_database = Path(_directory.name) / "races.sqlite3"
_few = settings(max_examples=20, stateful_step_count=15, deadline=None)

TestSQLiteRaces = backend_state_machine(lambda run_id: SQLiteBackend(_database, run_id)).TestCase
TestSQLiteRaces.settings = _few
TestSQLiteRacesOnTrio = backend_state_machine(
    lambda run_id: SQLiteBackend(_database, run_id), anyio_backend="trio"
).TestCase
TestSQLiteRacesOnTrio.settings = _few


def test_clients_under_faults_stay_linearizable(tmp_path: Path) -> None:
    """Clients retrying through dropped connections leave a linearizable history."""
    recorder = Recorder()

    async def client(number: int) -> None:
        inner = SQLiteBackend(tmp_path / "faults.sqlite3", "run", poll_interval=0.01)
        faulty = FaultyBackend(inner, seed=number, drop_before=0.1, drop_after=0.1)
        async with RecordingBackend(faulty, recorder) as backend:
            for _ in range(15):
                try:
                    current = await backend.get_state()
                    token = None if current is None else current[1]
                    await backend.set_state(b"client %d" % number, token)
                except ConnectionError:
                    pass  # an injected fault: the write may or may not have happened
                except Exception as error:  # RendezvousConnectionError wraps the injected one
                    if not isinstance(error.__cause__, ConnectionError):
                        raise

    async def main() -> None:
        async with anyio.create_task_group() as group:
            for number in range(4):
                group.start_soon(client, number)

    anyio.run(main)
    result = check(recorder.history())
    assert result.ok, result


def test_open_backend_finds_the_entry_point(tmp_path: Path) -> None:
    """Installed, the package adds the sqlite:// scheme to open_backend."""

    async def main() -> None:
        url = f"sqlite://{tmp_path / 'url.sqlite3'}"
        async with open_backend(url, run_id="run") as backend:
            _, token, written = await backend.set_state(b"hello")
            assert written
            assert await backend.get_state() == (b"hello", token)

    anyio.run(main)
