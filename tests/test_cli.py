from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from arendezvous.cli import main


def test_demo_runs_on_the_default_backend(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--nodes", "5", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "5 nodes racing to join run" in out
    assert out.count(" joined as #") == 5
    order = out.split("join order:")[1]
    assert all(f"node-{index}" in order for index in range(5))
    assert "5 joined," in out
    assert "CAS conflicts" in out
    assert "ops/s" in out


def test_demo_on_trio_and_a_file_url(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"file://{tmp_path}"
    assert main(["demo", "-n", "3", "--url", url, "--run-id", "r", "--event-loop", "trio"]) == 0
    assert "3 joined," in capsys.readouterr().out
    assert main(["inspect", url, "r"]) == 0
    out = capsys.readouterr().out
    assert "run 'r':" in out
    assert '"participants"' in out


def test_inspect_of_an_empty_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", f"file://{tmp_path}", "nothing"]) == 0
    assert "no state" in capsys.readouterr().out


def test_bad_input_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", "nosuch://x", "r"]) == 1
    assert "unknown backend URL scheme 'nosuch'" in capsys.readouterr().err
    assert main(["demo", "--nodes", "0"]) == 2
    with pytest.raises(SystemExit):
        main(["frobnicate"])


def test_python_dash_m_entry_point() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "arendezvous", "demo", "-n", "2"],
        capture_output=True, text=True, check=True, timeout=60,
    )
    assert "2 joined," in out.stdout
