"""The ``arendezvous`` command: its commands, its errors, and the ways to start it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from _missing import missing
from arendezvous.cli import build_parser, main


def test_every_command_is_registered() -> None:
    assert "{demo,runs,inspect,close,delete,check}" in build_parser().format_usage()


def test_bad_input_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", "nosuch://x", "r"]) == 1
    assert "unknown backend URL scheme 'nosuch'" in capsys.readouterr().err
    assert main(["demo", "--nodes", "0"]) == 2
    with pytest.raises(SystemExit):
        main(["frobnicate"])


def test_unexpected_errors_are_not_swallowed(monkeypatch: pytest.MonkeyPatch) -> None:
    import arendezvous.cli.demo as demo

    async def broken(*args: object, **kwargs: object) -> None:
        raise KeyError("a bug, not a user error")

    monkeypatch.setattr(demo, "run_demo", broken)
    with pytest.raises(KeyError, match="a bug"):
        main(["demo", "-n", "2"])


def test_python_dash_m_entry_point() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "arendezvous", "demo", "-n", "2"],
        capture_output=True, text=True, check=True, timeout=60,
    )
    assert "2 joined with" in out.stdout


def test_python_dash_m_cli_and_the_console_script() -> None:
    script = Path(sys.executable).parent / "arendezvous"
    if not script.exists():
        found = shutil.which("arendezvous", path=os.environ.get("PATH"))
        if found is None:
            missing("the arendezvous console script is not installed in this environment")
        script = Path(found)
    for command in ([sys.executable, "-m", "arendezvous.cli"], [str(script)]):
        out = subprocess.run(
            [*command, "inspect", "memory://", "nothing"],
            capture_output=True, text=True, check=False, timeout=60,
        )
        assert out.returncode == 1
        assert "run 'nothing': no rendezvous on memory://" in out.stderr
