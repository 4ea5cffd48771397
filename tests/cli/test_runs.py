"""``arendezvous runs``: the runs of a store, as a table or JSON; expired runs removed through the
URL's option; a clear error for a backend that cannot list runs."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

import arendezvous.cli.runs as runs_command
from arendezvous import AsyncRendezvousBackend, FileBackend, MemoryBackend, RunInfo
from arendezvous.backends.memory import named_store
from arendezvous.cli import main
from arendezvous.cli.runs import format_age, format_runs

FormRound = Callable[[Path, str, int], None]  # the form_round fixture (conftest.py)


def _write(directory: Path, run_id: str, state: bytes) -> None:
    async def write() -> None:
        async with FileBackend(directory, run_id, durable=False) as backend:
            await backend.set_state(state)

    anyio.run(write)


def test_a_table_of_the_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], form_round: FormRound
) -> None:
    form_round(tmp_path, "job-b", 3)
    _write(tmp_path, "job-a", b"12345")
    assert main(["runs", f"file://{tmp_path}"]) == 0
    header, first, second = capsys.readouterr().out.splitlines()
    assert header.split() == ["RUN", "AGE", "SIZE", "MEMBERS"]
    assert first.split()[0] == "job-a"
    assert first.split()[3:] == ["5", "B", "0"]
    assert second.split()[0] == "job-b"
    assert second.split()[-1] == "3"  # one member record per node
    assert second.split()[2] == "s"  # written seconds ago


def test_json(tmp_path: Path, capsys: pytest.CaptureFixture[str], form_round: FormRound) -> None:
    form_round(tmp_path, "job", 2)
    assert main(["runs", f"file://{tmp_path}", "--json"]) == 0
    [run] = json.loads(capsys.readouterr().out)
    assert set(run) == {"run_id", "age", "size", "members"}
    assert (run["run_id"], run["members"]) == ("job", 2)
    assert run["size"] > 0
    assert 0 <= run["age"] < 60
    assert main(["runs", f"file://{tmp_path}/empty", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_no_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["runs", f"file://{tmp_path}?durable=false"]) == 0
    assert capsys.readouterr().out == f"no runs on file://{tmp_path}?durable=false\n"
    assert list(tmp_path.iterdir()) == []  # listing makes nothing


def test_the_memory_store_of_this_process(capsys: pytest.CaptureFixture[str]) -> None:
    anyio.run(MemoryBackend("in-memory", named_store("cli-runs")).set_state, b"abc")
    assert main(["runs", "memory://cli-runs"]) == 0
    [_, row] = capsys.readouterr().out.splitlines()
    # Ages are not tracked in a store where no handle expires runs.
    assert row.split() == ["in-memory", "-", "3", "B", "0"]


def test_expire_after_in_the_url_removes_idle_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _write(tmp_path, "idle", b"x")
    _write(tmp_path, "busy", b"y")
    past = time.time() - 7200
    for name in ("idle.rdzv", "idle.lock"):
        os.utime(tmp_path / name, (past, past))
    assert main(["runs", f"file://{tmp_path}?expire_after=3600", "--json"]) == 0
    assert [run["run_id"] for run in json.loads(capsys.readouterr().out)] == ["busy"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["busy.lock", "busy.rdzv"]


def test_a_backend_that_cannot_list_runs(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    contract_only: AsyncRendezvousBackend,
) -> None:
    monkeypatch.setattr(runs_command, "open_backend", lambda url, run_id: contract_only)
    assert main(["runs", "plain://u:hunter2@host"]) == 1
    err = capsys.readouterr().err
    assert err == "arendezvous: the contract-only backend cannot list runs (plain://u:***@host)\n"


def test_formatting() -> None:
    assert [format_age(age) for age in (None, 0.4, 59.4, 60, 5400, 86400 * 3)] == [
        "-", "0 s", "59 s", "1.0 min", "1.5 h", "3.0 d"]
    table = format_runs([RunInfo("b", None, None, None), RunInfo("a-long-id", 1234, 2.0, 7)])
    assert table.splitlines() == [
        "RUN        AGE    SIZE  MEMBERS",
        "a-long-id  2 s  1234 B        7",
        "b            -       -        -",
    ]
