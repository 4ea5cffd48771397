"""``arendezvous check`` refuses options that do not make a run, with exit status 2."""

from __future__ import annotations

import pytest

from arendezvous.cli.check import CheckOptions, UsageError, main


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "give a backend URL or --start"),
        (["memory://", "--start", "redis"], "give a backend URL or --start"),
        (["memory://", "--faults", "kill-server"], "needs a server the harness starts"),
        (["memory://", "--faults", "kill-writer"], "memory:// state lives in one process"),
        (["memory://", "--kills", "-1"], "--kills must not be negative"),
        (["--start", "etcd", "--event-loop", "trio"], "run only on asyncio"),
        (["nosuch://x"], "unknown backend URL scheme 'nosuch'"),
        (["memory://?colour=red"], "unknown option 'colour'"),
    ],
)
def test_usage_errors_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["check", *argv, "--ops", "10"])
    assert status == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--ops", "0"], "argument --ops: must be at least 1"),
        (["--time-limit", "inf"], "argument --time-limit: must be a positive number of seconds"),
        (["--faults", "kill-everything"], "argument --faults: invalid choice"),
    ],
)
def test_bad_arguments_are_refused_by_the_parser(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["check", "memory://", *argv])
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_options_built_in_code_are_checked_too() -> None:
    with pytest.raises(UsageError, match="--clients must be at least 1"):
        CheckOptions(url="memory://", clients=0).validate()
    with pytest.raises(UsageError, match="--check-time must be a positive number"):
        CheckOptions(url="memory://", check_time=float("nan")).validate()


def test_the_parser_defaults_are_the_options_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["check", "--help"])
    shown = capsys.readouterr().out
    defaults = CheckOptions()
    assert f"clients (default {defaults.clients})" in shown
    assert f"operations in all (default {defaults.ops})" in shown
    assert f"(default {defaults.time_limit:g})" in shown
    assert CheckOptions(url="memory://", ops=1200).fault_count == 0
    assert CheckOptions(url="memory://", ops=1200, faults="kill-writer").fault_count == 3
