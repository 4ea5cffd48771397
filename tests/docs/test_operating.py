"""docs/operating.md, run as written.

Each code block is marked by an HTML comment on the line before it (the block syntax of
``tests/testing/test_docs.py``, whose parser this reuses):

``<!-- run -->``
    a complete Python script: run as it is, in an empty directory;
``<!-- file: NAME -->``
    a file the shell commands after it use: written as ``NAME``;
an unmarked ``bash`` block
    a shell command, run in the same directory, with ``/tmp/arendezvous-operating`` (the store
    the page's commands use) standing for a fresh directory of the test's own;
``<!-- output -->``, ``<!-- output: exit 1 -->``
    the output (stdout and stderr) of the block before it, line by line, and its exit status
    (0 unless said);
``<!-- output: any order -->``
    the same lines, in any order;
``<!-- output: like -->``
    output that varies with timing: every line is one of these, and the last is the last.

In every shown line, numbers are free to differ, and ``…`` stands for any text (a random
incarnation, say).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from testing.test_docs import REPOSITORY, Block, blocks

pytestmark = pytest.mark.slow

PAGE = REPOSITORY / "docs" / "operating.md"
STORE = "/tmp/arendezvous-operating"


def shown_line(line: str) -> re.Pattern[str]:
    """A shown output *line* as a pattern: numbers free, ``…`` any text, spaces any width."""
    parts = re.split(r"(\d+(?:\.\d+)?|\s+|…)", line.strip())
    return re.compile("".join(
        r"[\d.]+" if re.fullmatch(r"\d+(?:\.\d+)?", part)
        else r"\s+" if part.isspace()
        else ".+?" if part == "…"
        else re.escape(part)
        for part in parts if part
    ))


def check_output(marker: str, shown: str, output: str, status: int) -> None:
    """*output* and *status* are what the output block marked *marker* says (*shown*)."""
    expected_status = 0
    match = re.fullmatch(r"output(?:: (exit (\d+)|any order|like))?", marker)
    assert match is not None, f"unknown output marker {marker!r}"
    if match[2] is not None:
        expected_status = int(match[2])
    assert status == expected_status, output
    patterns = [shown_line(line) for line in shown.splitlines()]
    lines = output.splitlines()
    mode = match[1] or "in order"
    if mode in ("in order", f"exit {expected_status}"):
        assert len(lines) == len(patterns), output
        for pattern, line in zip(patterns, lines, strict=True):
            assert pattern.fullmatch(line.strip()), f"{line!r} is not like {pattern.pattern!r}"
    elif mode == "any order":
        unused = list(patterns)
        for line in lines:
            found = next((p for p in unused if p.fullmatch(line.strip())), None)
            assert found is not None, f"{line!r} is none of the shown lines:\n{output}"
            unused.remove(found)
        assert not unused, f"lines never printed: {[p.pattern for p in unused]}\n{output}"
    else:
        assert lines, "nothing printed"
        for line in lines:
            assert any(p.fullmatch(line.strip()) for p in patterns), f"{line!r}:\n{output}"
        assert patterns[-1].fullmatch(lines[-1].strip()), output


def run(command: list[str] | str, directory: Path) -> tuple[str, int]:
    """Run *command* in *directory* as a user's shell would (this environment's ``python`` and
    ``arendezvous`` first on the path); return its output and exit status."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(command, cwd=directory, env=env, shell=isinstance(command, str),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            timeout=120, check=False)
    return result.stdout, result.returncode


def test_every_block_of_the_page_does_what_it_says(tmp_path: Path) -> None:
    store = tmp_path / "store"
    page = blocks(PAGE.read_text(encoding="utf-8").replace(STORE, str(store)))
    previous: Block | None = None
    output, status = "", 0
    checked = 0
    for block in page:
        if block.marker == "run":
            script = tmp_path / f"script{checked}.py"
            script.write_text(block.body, encoding="utf-8")
            output, status = run([sys.executable, str(script)], tmp_path)
        elif block.marker.startswith("file:"):
            (tmp_path / block.marker.removeprefix("file:").strip()).write_text(
                block.body, encoding="utf-8")
        elif block.language == "bash":
            output, status = run(block.body.strip(), tmp_path)
        elif block.marker.startswith("output"):
            assert previous is not None, block
            assert previous.language in ("python", "bash"), block
            # Compared as the page shows them: with the page's directory.
            check_output(block.marker, block.body.replace(str(store), STORE),
                         output.replace(str(store), STORE), status)
            checked += 1
        else:
            raise AssertionError(f"a block this test does not know how to run: {block}")
        previous = block
    assert checked >= 12
