"""``arendezvous check``: short fault runs on every backend end linearizable; a broken one does not.

Each run is small (4 clients, a few hundred operations) so the module stays fast on a busy machine;
``docs/check.md`` gives the longer commands for soak testing.
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path
from typing import Any

import pytest

import _broken_backends
from arendezvous import AsyncRendezvousBackend
from arendezvous.backends import _url
from arendezvous.cli.check import CheckOptions, main, run_check
from arendezvous.testing.history import load
from arendezvous.testing.linearizability import check

SHORT = ["--clients", "4", "--ops", "300", "--seed", "7"]


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = main(["check", *argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def _count(pattern: str, text: str) -> int:
    found = re.search(pattern, text)
    assert found is not None, f"{pattern!r} not in:\n{text}"
    return int(found.group(1))


def _assert_linearizable(status: int, out: str, ops: int = 300) -> None:
    assert status == 0, out
    assert "verdict     OK: linearizable" in out
    assert _count(r"operations  (\d+) in", out) >= ops - 4  # a kill may beat a call's record
    assert _count(r"outcomes    ok (\d+)", out) > ops // 2


# -- in-process clients ----------------------------------------------------------------------------


@pytest.mark.parametrize("event_loop", ["asyncio", "trio"])
def test_memory(event_loop: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = _run(["memory://", *SHORT, "--event-loop", event_loop], capsys)
    _assert_linearizable(status, out)
    assert "faults      none" in out
    assert "ops 300/300" in err  # the progress display's last line
    assert "seed        7" in out


def test_a_non_atomic_backend_is_caught(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    states: dict[str, tuple[bytes, Any]] = {}

    def from_url(url: str, *, run_id: str) -> AsyncRendezvousBackend:
        return _broken_backends.NonAtomicBackend(states, run_id)

    monkeypatch.setattr(_broken_backends, "from_url", from_url, raising=False)
    monkeypatch.setitem(_url._BUILTIN, "broken", "_broken_backends:from_url")
    status, out, _ = _run(["broken://", *SHORT], capsys)
    assert status == 1, out
    assert "verdict     VIOLATION: the history is not linearizable" in out
    # The report names the offending operations: two writes that won with one token.
    assert "writes won with the same token" in out
    named = re.findall(r"^\s+#(\d+)\s+(c\d)\s.*set_state\(.*-> won", out, re.MULTILINE)
    assert len(named) >= 2, out
    assert len({op for op, _ in named}) == len(named)
    assert "the smallest failing prefix ends at" in out


def test_an_opener_serves_backends_without_a_scheme() -> None:
    states: dict[str, tuple[bytes, Any]] = {}
    out, err = io.StringIO(), io.StringIO()
    status = run_check(
        CheckOptions(url="planted://", clients=3, ops=200, seed=1),
        out=out,
        err=err,
        opener=lambda url, run_id: _broken_backends.NonAtomicBackend(states, run_id),
    )
    assert status == 1
    assert "VIOLATION" in out.getvalue()


def test_an_unreachable_store_gives_no_verdict(capsys: pytest.CaptureFixture[str]) -> None:
    from servers import free_port

    pytest.importorskip("redis")
    port = free_port()  # nothing listens there
    status, out, _ = _run([f"redis://127.0.0.1:{port}/0", "--clients", "2", "--ops", "20"], capsys)
    assert status == 2
    assert "no call succeeded" in out


# -- client processes killed mid-write ---------------------------------------------------------


def test_file_with_killed_writers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    history = tmp_path / "history.jsonl"
    url = f"file://{tmp_path / 'store'}"
    argv = [url, *SHORT, "--faults", "kill-writer", "--kills", "3", "--history", str(history)]
    status, out, err = _run(argv, capsys)
    _assert_linearizable(status, out)
    assert _count(r"faults      (\d+) client processes SIGKILLed", out) == 3
    assert _count(r"(\d+) replacements took over", out) >= 1
    assert "writers killed 3" in err
    recorded = load(history)
    assert check(recorded).ok
    assert len(recorded) == _count(r"operations  (\d+) in", out)
    assert {op.client for op in recorded} >= {"c0.1", "c1.1", "c2.1", "c3.1"}
    # Replacements (second generation) went on with the killed processes' operations.
    assert any(op.client.endswith(".2") for op in recorded)


def test_a_worker_that_cannot_start_is_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The durable option takes a boolean: each worker process fails opening its handles.
    url = f"file://{tmp_path}?durable=perhaps"
    argv = [url, "--clients", "2", "--ops", "20", "--faults", "kill-writer"]
    status, out, _ = _run(argv, capsys)
    assert status == 2
    assert "crashed     c0.1 exited with status 1" in out
    assert "durable" in out  # the worker's own error, from its stderr
    assert "the run is incomplete" in out


# -- servers the harness starts and kills ------------------------------------------------------


def _require(server: str) -> None:
    """Skip (locally) or fail (CI) as the other store tests do when the server is missing."""
    import servers.etcd
    import servers.postgres
    import servers.redis
    import servers.seaweedfs

    launcher: Any = {
        "redis": servers.redis.RedisServer,
        "etcd": servers.etcd.EtcdServer,
        "postgresql": servers.postgres.PostgresServer,
        "seaweedfs": servers.seaweedfs.SeaweedFSServer,
    }[server]
    launcher().stop()  # finds the binary (or skips/fails), starts nothing


@pytest.mark.parametrize(
    ("server", "client"),
    [
        ("redis", "redis"),
        ("etcd", "aetcd"),
        ("postgresql", "asyncpg"),
        ("seaweedfs", "aiobotocore"),
    ],
)
def test_killed_and_restarted_server(
    server: str, client: str, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip(client)
    _require(server)
    argv = ["--start", server, *SHORT, "--faults", "kill-server", "--kills", "2"]
    status, out, err = _run(argv, capsys)
    _assert_linearizable(status, out)
    assert re.search(r"SIGKILLed 2 times and restarted 2 \(down", out), out
    assert "server kills 2" in err
    # Calls were in flight when the server died, and the clients went on after the restarts.
    assert _count(r"unknown (\d+)", out) + _count(r"fail (\d+)", out) >= 1
    assert "RendezvousConnectionError" in out


def test_worker_processes_reach_a_started_s3_store(capsys: pytest.CaptureFixture[str]) -> None:
    """The URL of a SeaweedFS store carries no credentials: the worker processes find them
    through the environment the harness gives them (the credentials files' names)."""
    pytest.importorskip("aiobotocore")
    _require("seaweedfs")
    before = dict(os.environ)
    argv = ["--start", "seaweedfs", "--clients", "2", "--ops", "60", "--seed", "7",
            "--faults", "kill-writer", "--kills", "1"]  # fmt: skip
    status, out, _ = _run(argv, capsys)
    _assert_linearizable(status, out, ops=60)
    assert _count(r"faults      (\d+) client processes SIGKILLed", out) == 1
    assert dict(os.environ) == before, "the harness left the server's environment behind"
