"""``arendezvous demo``: the command plays the demo and ends with its tables."""

from __future__ import annotations

import pytest

from arendezvous.cli import main


def test_demo_runs_on_the_default_backend(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--nodes", "5", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "5 nodes joining run" in out
    assert out.count(" joined round 0 as #") == 5
    order = out.split("join order")[1]
    assert all(f"node-{index}" in order for index in range(5))
    assert "5 joined with" in out
    assert "per node" in out
    assert "ops/s" in out


def test_too_few_nodes_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--nodes", "0"]) == 2
    assert "--nodes must be at least 1" in capsys.readouterr().err


def test_an_unreachable_store_is_one_clear_line(capsys: pytest.CaptureFixture[str]) -> None:
    from servers import free_port

    pytest.importorskip("redis")
    # Every node fails the same way, inside the demo's task group: one line says it, once.
    url = f"redis://127.0.0.1:{free_port()}/0"
    assert main(["demo", "--nodes", "3", "--url", url]) == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("arendezvous: ")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert "get_state of run" in lines[0]
