"""``check --faults kill-writer``'s worker process: its protocol; no URL on its command line."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from arendezvous.cli.check._tokens import StoreTokenCodec
from arendezvous.cli.check._worker import (
    MODULE,
    URL_VARIABLE,
    worker_command,
    worker_environment,
)
from arendezvous.testing.history import load


def _command(run_ids: list[str], history: Path) -> list[str]:
    return worker_command(
        run_ids,
        client="c0.1",
        ops=20,
        seed=5,
        history=str(history),
        deadline_ns=2**62,
        event_loop="asyncio",
    )


def test_the_url_travels_in_the_environment_not_the_command_line(tmp_path: Path) -> None:
    url = "redis://u:hunter2@127.0.0.1:6379/0"
    command = _command(["r1", "r2"], tmp_path / "h.jsonl")
    assert command[1:3] == ["-m", MODULE]
    assert not any("hunter2" in part for part in command)  # other users can read command lines
    assert command.count("--run-id") == 2
    environment = worker_environment(url)
    assert environment[URL_VARIABLE] == url
    assert environment["PATH"] == os.environ["PATH"]


def test_a_worker_runs_its_operations_and_says_so(tmp_path: Path) -> None:
    history = tmp_path / "h.jsonl"
    command = _command(["r1"], history)
    finished = subprocess.run(
        command,
        input="go\n",
        env=worker_environment(f"file://{tmp_path / 'store'}?durable=false"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert finished.returncode == 0, finished.stderr
    lines = finished.stdout.splitlines()
    assert lines[0] == "ready"
    assert lines[-1] == "done"
    assert sum(line.startswith("> ") for line in lines) == 20
    assert sum(line.startswith("< ok") for line in lines) == 20
    recorded = load(history, codec=StoreTokenCodec())
    assert len(recorded) == 20
    assert {op.client for op in recorded} == {"c0.1"}


def test_a_worker_without_a_url_says_where_it_goes(tmp_path: Path) -> None:
    command = _command(["r1"], tmp_path / "h.jsonl")
    environment = {name: value for name, value in os.environ.items() if name != URL_VARIABLE}
    finished = subprocess.run(
        command, env=environment, capture_output=True, text=True, timeout=120
    )
    assert finished.returncode == 2
    assert URL_VARIABLE in finished.stderr
