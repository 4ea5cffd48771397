"""The demo shows rounds, ranks and a node dropping out, on every backend and event loop."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from arendezvous.cli.demo import run_demo

pytestmark = pytest.mark.anyio


async def test_demo_plays_rounds_ranks_and_a_dropout(tmp_path: Path, anyio_backend: str) -> None:
    url = "memory://" if anyio_backend == "asyncio" else f"file://{tmp_path}?durable=false"
    out = io.StringIO()
    result = await run_demo(4, url=url, seed=1, out=out)
    text = out.getvalue()
    assert sorted(result.order) == ["node-0", "node-1", "node-2", "node-3"]
    assert [(summary.round, len(summary.participants), summary.trigger)
            for summary in result.rounds] == [
        (0, 4, "start"), (1, 3, "a node dropped out"), (2, 4, "a node was waiting")]
    # The highest rank drops out; the others form round 1 without it and ranks follow node ids.
    assert result.rounds[1].participants == ("node-0", "node-1", "node-2")
    assert "node-3 drops out" in text
    assert "round 0 is over: a participant was evicted or left" in text
    assert "evicted node-3: its record went 0.25 s without a heartbeat" in text
    assert "node-3 joined round 2 (#1 in it)" in text  # it waited first, so it is first
    assert "round 2 complete" in text
    assert "ranks 0:node-0, 1:node-1, 2:node-2, 3:node-3" in text
    assert "every node saw the run closed" in text
    assert result.operations > 0
    assert result.seconds > 0
    assert result.total_operations >= result.operations


async def test_demo_with_one_node() -> None:
    out = io.StringIO()
    result = await run_demo(1, out=out)
    assert [summary.participants for summary in result.rounds] == [("node-0",)]
    assert "drops out" not in out.getvalue()
    with pytest.raises(ValueError, match="at least 1"):
        await run_demo(0, out=out)
