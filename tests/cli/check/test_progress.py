"""The progress display: one line rewritten in place on a terminal, periodic lines otherwise."""

from __future__ import annotations

import io
import re

from arendezvous.cli.check import CheckOptions, run_check


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_one_line_on_a_terminal_and_lines_otherwise() -> None:
    options = CheckOptions(url="memory://", clients=2, ops=100, seed=3)
    terminal, pipe = _Terminal(), io.StringIO()
    assert run_check(options, out=io.StringIO(), err=terminal) == 0
    assert run_check(options, out=io.StringIO(), err=pipe) == 0
    shown = terminal.getvalue()
    assert re.search(r"\r\s*[\d.]+ s  ops 100/100  ok 100  fail 0  unknown 0\x1b\[K\n", shown)
    assert "\r" not in pipe.getvalue()
    assert re.search(r"^\s*[\d.]+ s  ops 100/100 ", pipe.getvalue(), re.MULTILINE)
