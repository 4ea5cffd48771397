"""``arendezvous inspect`` and ``arendezvous close``: a run's rendezvous decoded, followed as it
changes, or closed from outside; clear errors for runs that have none."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from arendezvous import FileBackend
from arendezvous.cli import main
from arendezvous.rendezvous import read_status

FormRound = Callable[[Path, str, int], None]  # the form_round fixture (conftest.py)


def test_demo_on_trio_and_a_file_url(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"file://{tmp_path}"
    assert main(["demo", "-n", "3", "--url", url, "--run-id", "r", "--event-loop", "trio"]) == 0
    assert "3 joined with" in capsys.readouterr().out
    assert main(["inspect", url, "r"]) == 0
    out = capsys.readouterr().out
    assert "run 'r': round 2" in out
    assert "closed" in out


def test_inspect_decodes_the_round(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], form_round: FormRound
) -> None:
    form_round(tmp_path, "job", 3)
    url = f"file://{tmp_path}"
    assert main(["inspect", url, "job"]) == 0
    out = capsys.readouterr().out
    assert "round 0 (" in out
    assert "complete, world size 3" in out
    for rank in range(3):
        assert f"rank {rank}" in out
        assert f"n{rank}  heartbeat" in out
    assert main(["inspect", url, "job", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["run_id"] == "job"
    assert document["complete"] is True
    assert [(p["node"], p["rank"]) for p in document["participants"]] == [
        ("n0", 0), ("n1", 1), ("n2", 2)]
    assert all(p["heartbeat_age"] >= 0 for p in document["participants"])
    assert main(["inspect", url, "job", "--raw"]) == 0
    assert "token" in capsys.readouterr().out


def test_follow_prints_each_change(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], form_round: FormRound
) -> None:
    form_round(tmp_path, "job", 2)
    url = f"file://{tmp_path}?poll_interval=0.01"
    assert main(["close", url, "job"]) == 0
    assert "run 'job': closed" in capsys.readouterr().out
    # Bounded by --count: the current state, then (every 10 ms) the same again.
    assert main(["inspect", url, "job", "--follow", "--json", "--every", "0.01",
                 "--count", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert all(json.loads(line)["closed"] for line in lines)


def test_close_from_outside(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], form_round: FormRound
) -> None:
    form_round(tmp_path, "job", 2)
    url = f"file://{tmp_path}"
    assert main(["close", url, "job"]) == 0
    assert "run 'job': closed" in capsys.readouterr().out
    assert main(["close", url, "job"]) == 0
    assert "already closed" in capsys.readouterr().out
    status = anyio.run(read_status, FileBackend(tmp_path, "job"))
    assert status.closed


def test_runs_without_a_rendezvous_are_clear_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"file://{tmp_path}"
    assert main(["inspect", url, "nothing"]) == 1
    assert "no rendezvous" in capsys.readouterr().err
    assert main(["inspect", url, "nothing", "--raw"]) == 1
    assert "no state" in capsys.readouterr().err
    assert main(["close", url, "nothing"]) == 1
    assert "nothing to close" in capsys.readouterr().err
    assert not (tmp_path / "nothing.rdzv").exists()  # a typo creates nothing

    async def plant() -> None:
        async with FileBackend(tmp_path, "other") as backend:
            await backend.set_state(b"not a rendezvous")

    anyio.run(plant)
    assert main(["inspect", url, "other"]) == 1
    assert "--raw shows its bytes" in capsys.readouterr().err
    assert main(["inspect", url, "other", "--raw"]) == 0
    assert "not a rendezvous" in capsys.readouterr().out


def test_bad_follow_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", f"file://{tmp_path}", "r", "--count", "0"]) == 2
    assert main(["inspect", f"file://{tmp_path}", "r", "--every", "-1"]) == 2
    assert "--every" in capsys.readouterr().err


def test_a_password_never_shows(capsys: pytest.CaptureFixture[str]) -> None:
    from arendezvous.testing.servers import free_port

    url = f"redis://:hunter2-secret@127.0.0.1:{free_port()}/0?timeout=0.5"
    for command in (["inspect", url, "r"], ["close", url, "r"]):
        assert main(command) == 1
        captured = capsys.readouterr()
        assert "hunter2" not in captured.out + captured.err
