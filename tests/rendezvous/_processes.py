"""Drive :mod:`_process_worker` processes: start them together, read the rounds they report."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

__all__ = ("Worker", "start_workers")

_WORKER = Path(__file__).with_name("_process_worker.py")


class Worker:
    """One worker process, its output lines read by a thread into a queue."""

    def __init__(self, url: str, run_id: str, node: str, min_nodes: int, max_nodes: int,
                 last_call: float, heartbeat: float, env: dict[str, str] | None = None) -> None:
        self.node = node
        self.ended: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, str(_WORKER), url, run_id, node, str(min_nodes), str(max_nodes),
             str(last_call), str(heartbeat)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, **(env or {})},
        )
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)
        self._lines.put("")

    def line(self, timeout: float = 60.0) -> str:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"{self.node} printed nothing for {timeout} s") from None
        if not line:
            _, err = self.process.communicate(timeout=timeout)
            raise AssertionError(f"{self.node} exited ({self.process.returncode}): {err}")
        return line.strip()

    def next_round(self, timeout: float = 60.0) -> dict[str, Any]:
        """The next round the worker completed (ends of rounds it reports meanwhile go to
        :attr:`ended`)."""
        while True:
            info: dict[str, Any] = json.loads(self.line(timeout))
            if "ended" in info:
                self.ended.append(info["ended"])
                continue
            info["participants"] = tuple(info["participants"])
            return info

    def send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def stop(self, timeout: float = 30.0) -> None:
        if self.process.poll() is None:
            try:
                self.send("exit")
                self.process.wait(timeout)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()


def start_workers(url: str, run_id: str, nodes: list[str], *, min_nodes: int, max_nodes: int,
                  last_call: float = 0.2, heartbeat: float = 0.1,
                  envs: list[dict[str, str]] | None = None) -> list[Worker]:
    """Start one worker per node (each with its extra environment from *envs*), wait until every
    one is ready, then let all join at once."""
    envs = envs or [{} for _ in nodes]
    workers = [Worker(url, run_id, node, min_nodes, max_nodes, last_call, heartbeat, env)
               for node, env in zip(nodes, envs, strict=True)]
    try:
        for worker in workers:
            assert worker.line() == "ready"
        for worker in workers:
            worker.send("go")
    except BaseException:
        for worker in workers:
            worker.process.kill()
        raise
    return workers
