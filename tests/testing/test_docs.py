"""The README's "Testing your own backend" and docs/testing.md, run as written.

docs/testing.md marks each code block with an HTML comment on the line before it:

``<!-- excerpt: PATH -->``
    the block is quoted verbatim from the file PATH of this repository;
``<!-- pytest: passes -->`` / ``<!-- pytest: fails -->``
    the block is a test file (its first line names it); pytest runs it and must pass, or fail;
``<!-- run -->``
    the block is a script, run next to the test files;
``<!-- output -->``
    the block shows output: after a script, its output line by line; after a failing test file,
    lines found in pytest's report. Numbers are free to differ (tokens, times).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPOSITORY = Path(__file__).resolve().parents[2]
README = REPOSITORY / "README.md"
GUIDE = REPOSITORY / "docs" / "testing.md"

_BLOCK = re.compile(
    r"(?:<!-- (?P<marker>[^>]*?) -->\n)?```(?P<language>\w*)\n(?P<body>.*?)```", re.S
)


@dataclass(frozen=True)
class Block:
    """One fenced code block and the marker before it ("" when unmarked)."""

    marker: str
    language: str
    body: str


def blocks(text: str) -> list[Block]:
    """The fenced code blocks of a markdown text, in order."""
    return [
        Block(match["marker"] or "", match["language"], match["body"])
        for match in _BLOCK.finditer(text)
    ]


def section(text: str, heading: str) -> str:
    """The markdown section under *heading*, up to the next heading of the same level."""
    start = text.index(heading + "\n")
    level = heading.split(" ")[0]
    end = text.find("\n" + level + " ", start + len(heading))
    return text[start : end if end >= 0 else len(text)]


def pattern(line: str) -> re.Pattern[str]:
    """*line* as a regular expression in which numbers and runs of spaces may differ."""
    parts = re.split(r"(\d+(?:\.\d+)?|\s+)", line.strip())
    return re.compile(
        "".join(
            r"[\d.]+" if re.fullmatch(r"\d+(?:\.\d+)?", part)
            else r"\s+" if part.isspace()
            else re.escape(part)
            for part in parts
            if part
        )
    )


def pytest_in(directory: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """pytest run in *directory* as a user would: the files there, their own configuration."""
    env = {**os.environ}
    env.pop("PYTEST_ADDOPTS", None)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--tb=short", *options],
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_the_readme_test_file_runs_as_written(tmp_path: Path) -> None:
    readme = section(README.read_text(encoding="utf-8"), "## Testing your own backend")
    (code,) = [block.body for block in blocks(readme) if block.language == "python"]
    (tmp_path / "test_my_backend.py").write_text(code, encoding="utf-8")
    # A user's CI profile, as it were: fewer state-machine cases than Hypothesis's 100.
    (tmp_path / "conftest.py").write_text(
        "from hypothesis import settings\n"
        "settings.register_profile('quick', max_examples=15)\n"
        "settings.load_profile('quick')\n",
        encoding="utf-8",
    )
    # The README's `my_package`: a backend taking only a run id, as the state machine calls it.
    (tmp_path / "my_package.py").write_text(
        "from arendezvous import MemoryBackend, MemoryStore\n"
        "STORE = MemoryStore()\n"
        "class MyBackend(MemoryBackend):\n"
        "    def __init__(self, run_id):\n"
        "        super().__init__(run_id, STORE)\n",
        encoding="utf-8",
    )
    result = pytest_in(tmp_path, "-v")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert re.search(r"TestMyBackend::test_runs_are_isolated\[asyncio\] PASSED", output), output
    assert re.search(r"TestMyBackend::test_runs_are_isolated\[trio\] PASSED", output), output
    assert "TestMyBackendRaces::runTest PASSED" in output, output
    assert "TestMyBackendRacesOnTrio::runTest PASSED" in output, output


def test_the_guide_quotes_the_example_verbatim() -> None:
    excerpts = [block for block in blocks(GUIDE.read_text()) if block.marker.startswith("excerpt:")]
    assert len(excerpts) >= 4
    for block in excerpts:
        path = REPOSITORY / block.marker.removeprefix("excerpt:").strip()
        assert block.body in path.read_text(encoding="utf-8"), f"not verbatim in {path}"


def test_the_guides_test_files_and_scripts_do_what_it_says(tmp_path: Path) -> None:
    guide = blocks(GUIDE.read_text(encoding="utf-8"))
    previous: Block | None = None
    report = ""
    checked = 0
    for block in guide:
        if block.marker.startswith("pytest:"):
            name = block.body.splitlines()[0].removeprefix("# ").strip()
            (tmp_path / name).write_text(block.body, encoding="utf-8")
            # A fixed seed: the shrunk case the guide shows is the one Hypothesis finds.
            result = pytest_in(tmp_path, name, "--hypothesis-seed=0")
            report = result.stdout + result.stderr
            expected = 0 if block.marker.endswith("passes") else 1
            assert result.returncode == expected, report
        elif block.marker == "run":
            result = subprocess.run(
                [sys.executable, "-c", block.body],
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=120,
                check=True,
            )
            report = result.stdout
        elif block.marker == "output":
            assert previous is not None
            lines = block.body.strip().splitlines()
            if previous.marker == "run":
                produced = report.strip().splitlines()
                assert len(produced) == len(lines), report
                for shown, real in zip(lines, produced, strict=True):
                    assert pattern(shown).fullmatch(real.strip()), (shown, real)
            else:
                for shown in lines:
                    assert pattern(shown).search(report), (shown, report)
            checked += 1
        if block.marker != "output":
            previous = block
    assert checked == 3
