"""torchrun end to end: real ``torchrun`` agents rendezvous through arendezvous and run gloo.

Each "node" is one ``torchrun --rdzv-backend=arendezvous`` process on 127.0.0.1 with one worker
running ``_allreduce.py``. The test reads the workers' ``ARDZV`` lines from torchrun's output as
they arrive (no sleeps): two nodes sum their ranks and exit 0; a third node started later makes
both running agents stop their workers and form a new round of three.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from integrations._torch_support import require_torch, store_url

require_torch()

_HERE = Path(__file__).parent
_LAUNCH = _HERE / "_torchrun_launch.py"
_SCRIPT = _HERE / "_allreduce.py"
_MARK = "ARDZV "
_TIMEOUT = 120.0

pytestmark = pytest.mark.slow


class _Node:
    """One torchrun process whose output is collected by a reader thread as it arrives."""

    def __init__(
        self, url: str, run_id: str, nnodes: str, final_world_size: int, engine: str | None = None
    ) -> None:
        env = dict(os.environ)
        # gloo binds to the address the host name resolves to unless told otherwise.
        env.update(GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        command = [
            sys.executable, str(_LAUNCH),
            "--nnodes", nnodes,
            "--nproc-per-node", "1",
            "--rdzv-backend", "arendezvous",
            "--rdzv-endpoint", url,
            "--rdzv-id", run_id,
            "--rdzv-conf", "join_timeout=60,last_call_timeout=1"
            + (f",engine={engine}" if engine else ""),
            "--local-addr", "127.0.0.1",
            "--monitor-interval", "0.2",
            "--max-restarts", "0",
            str(_SCRIPT), str(final_world_size),
        ]  # fmt: skip
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            # Its own process group, so that cleanup reaches the workers torchrun started too.
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def records(self) -> list[dict[str, Any]]:
        with self._changed:
            return [json.loads(line[len(_MARK) :]) for line in self.lines if line.startswith(_MARK)]

    def wait_for(self, predicate: Callable[[list[dict[str, Any]]], bool]) -> None:
        """Block until *predicate* holds for this node's records, or fail with its output."""
        with self._changed:
            done = self._changed.wait_for(
                lambda: predicate(self.records) or not self._reader.is_alive(), timeout=_TIMEOUT
            )
        if not done or not predicate(self.records):
            pytest.fail(f"torchrun node did not report as expected; output:\n{self.output()}")

    def finish(self) -> int:
        """Wait for the process to exit (bounded) and return its exit code."""
        try:
            code = self.process.wait(timeout=_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"torchrun node did not exit in {_TIMEOUT} s; output:\n{self.output()}")
        self._reader.join(10)
        return code

    def output(self) -> str:
        with self._changed:
            return "".join(self.lines[-80:])

    def kill(self) -> None:
        """Kill torchrun and any worker it left (a no-op for a node that exited cleanly)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


@pytest.fixture
def nodes() -> Iterator[list[_Node]]:
    started: list[_Node] = []
    yield started
    for node in started:
        node.kill()


def _world(size: int) -> Callable[[list[dict[str, Any]]], bool]:
    return lambda records: any(record["world_size"] == size for record in records)


def _check_round(records: list[dict[str, Any]], size: int) -> None:
    """The records of one round: ranks 0..size-1, one rank-0 master, the right sum everywhere."""
    in_round = [record for record in records if record["world_size"] == size]
    assert sorted(record["rank"] for record in in_round) == list(range(size))
    assert sorted(record["group_rank"] for record in in_round) == list(range(size))
    assert {record["sum"] for record in in_round} == {size * (size + 1) / 2}
    assert len({record["master"] for record in in_round}) == 1
    assert {record["agent_store"] for record in in_round} == {"True"}


@pytest.mark.parametrize("kind", ["file", "redis"])
def test_two_nodes_all_reduce(kind: str, tmp_path: Path, nodes: list[_Node]) -> None:
    with store_url(kind, str(tmp_path)) as url:
        if kind == "redis":
            # A bare HOST:PORT endpoint is read as redis://HOST:PORT.
            url = url.removeprefix("redis://").removesuffix("/0")
        run_id = f"e2e-{uuid.uuid4().hex[:8]}"
        nodes.extend(_Node(url, run_id, "2:2", 2) for _ in range(2))
        codes = [node.finish() for node in nodes]
    assert codes == [0, 0], "\n\n".join(node.output() for node in nodes)
    _check_round([record for node in nodes for record in node.records], 2)


@pytest.mark.parametrize("engine", ["arendezvous", "torch"])
def test_late_node_triggers_a_new_round(tmp_path: Path, nodes: list[_Node], engine: str) -> None:
    with store_url("file", str(tmp_path)) as url:
        run_id = f"e2e-late-{uuid.uuid4().hex[:8]}"
        nodes.extend(_Node(url, run_id, "2:3", 3, engine) for _ in range(2))
        # min 2, max 3: the first round closes one last-call second after two nodes joined.
        for node in nodes:
            node.wait_for(_world(2))
        nodes.append(_Node(url, run_id, "2:3", 3, engine))
        codes = [node.finish() for node in nodes]
    assert codes == [0, 0, 0], "\n\n".join(node.output() for node in nodes)
    records = [record for node in nodes for record in node.records]
    _check_round(records, 2)
    _check_round(records, 3)
    assert [record["world_size"] for record in nodes[2].records] == [3]
