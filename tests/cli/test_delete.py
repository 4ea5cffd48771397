"""``arendezvous delete``: a closed run deleted and said so; a run still open, or not a rendezvous,
refused without ``--force``; an unknown run an error; a backend that cannot delete runs too."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

import arendezvous.cli.delete as delete_command
from arendezvous import AsyncRendezvousBackend, FileBackend, MemoryBackend
from arendezvous.backends.memory import named_store
from arendezvous.cli import main
from arendezvous.cli.delete import describe_deleted
from arendezvous.rendezvous import AsyncRendezvous, NodeStatus, RunStatus

FormRound = Callable[[Path, str, int], None]  # the form_round fixture (conftest.py)


def _names(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


def test_deleting_a_closed_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], form_round: FormRound
) -> None:
    form_round(tmp_path, "job", 3)
    form_round(tmp_path, "other", 2)
    url = f"file://{tmp_path}"
    assert main(["close", url, "job"]) == 0
    capsys.readouterr()
    assert main(["delete", url, "job"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("deleted run 'job': ")
    assert out.endswith("bytes of state (round 0, closed, 3 participants) and any member records\n")
    assert _names(tmp_path) == ["other.lock", "other.members", "other.rdzv"]
    assert main(["delete", url, "job"]) == 1
    assert capsys.readouterr().err == f"arendezvous: no run 'job' on {url}; nothing deleted\n"


def test_a_run_that_is_not_closed_is_refused_without_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], form_round: FormRound
) -> None:
    form_round(tmp_path, "live", 2)
    url = f"file://{tmp_path}"
    before = {path.name: path.read_bytes() for path in tmp_path.iterdir()}
    assert main(["delete", url, "live"]) == 1
    err = capsys.readouterr().err
    assert "run 'live'" in err
    assert "is not closed (round 0)" in err
    assert "arendezvous close URL live" in err
    assert "--force" in err
    assert {path.name: path.read_bytes() for path in tmp_path.iterdir()} == before
    assert main(["delete", url, "live", "--force"]) == 0
    assert "(round 0, NOT closed, 2 participants)" in capsys.readouterr().out
    assert _names(tmp_path) == []


def test_state_that_is_not_a_rendezvous(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async def plant() -> None:
        async with FileBackend(tmp_path, "foreign") as backend:
            await backend.set_state(b"another program's state")

    anyio.run(plant)
    url = f"file://{tmp_path}"
    assert main(["delete", url, "foreign"]) == 1
    assert "holds state that is not a rendezvous; --force" in capsys.readouterr().err
    assert main(["delete", url, "foreign", "--force"]) == 0
    assert capsys.readouterr().out == (
        "deleted run 'foreign': 23 bytes of state (not a rendezvous) and any member records\n")


def test_an_unknown_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for extra in ([], ["--force"]):
        assert main(["delete", f"file://{tmp_path}", "nothing", *extra]) == 1
        assert "no run 'nothing'" in capsys.readouterr().err
    assert _names(tmp_path) == []  # a typo creates nothing, deletes nothing


def test_the_memory_store_of_this_process(capsys: pytest.CaptureFixture[str]) -> None:
    async def closed_run() -> None:
        node = AsyncRendezvous(MemoryBackend("cli-delete", named_store("cli-delete")), "a", 1, 1)
        async with node:
            await node.next_rendezvous()
            await node.close()

    anyio.run(closed_run)
    assert main(["delete", "memory://cli-delete", "cli-delete"]) == 0
    assert "(round 0, closed, 1 participant)" in capsys.readouterr().out
    assert main(["runs", "memory://cli-delete"]) == 0
    assert capsys.readouterr().out == "no runs on memory://cli-delete\n"


def test_a_backend_that_cannot_delete_runs(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    contract_only: AsyncRendezvousBackend,
) -> None:
    monkeypatch.setattr(delete_command, "open_backend", lambda url, run_id: contract_only)
    assert main(["delete", "plain://u:hunter2@host", "run"]) == 1
    err = capsys.readouterr().err
    assert err == "arendezvous: the contract-only backend cannot delete runs (plain://u:***@host)\n"


def test_what_is_said_of_a_deleted_run() -> None:
    node = NodeStatus("n", None, None)
    status = RunStatus(exists=True, round=4, closed=True, participants=(node,), waiting=(node,))
    assert describe_deleted("r", 10, status) == (
        "deleted run 'r': 10 bytes of state (round 4, closed, 1 participant, 1 waiting) and any "
        "member records")
    assert describe_deleted("r", None, RunStatus(exists=False)) == (
        "deleted run 'r': no state (no rendezvous record) and any member records")
