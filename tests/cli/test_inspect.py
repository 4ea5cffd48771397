"""``arendezvous inspect``: a run's stored state, or that it has none."""

from __future__ import annotations

from pathlib import Path

import pytest

from arendezvous.cli import main


def test_demo_on_trio_and_a_file_url(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"file://{tmp_path}"
    assert main(["demo", "-n", "3", "--url", url, "--run-id", "r", "--event-loop", "trio"]) == 0
    assert "3 joined with" in capsys.readouterr().out
    assert main(["inspect", url, "r"]) == 0
    out = capsys.readouterr().out
    assert "run 'r':" in out
    assert '"participants"' in out


def test_inspect_of_an_empty_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", f"file://{tmp_path}", "nothing"]) == 0
    assert "no state" in capsys.readouterr().out
