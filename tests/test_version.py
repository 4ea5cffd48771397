"""The version is written once, in ``arendezvous/_version.py``; the build and the package agree."""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

import arendezvous

ROOT = Path(__file__).resolve().parent.parent


def test_the_installed_metadata_and_the_package_agree() -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", arendezvous.__version__)
    assert importlib.metadata.version("arendezvous") == arendezvous.__version__


def test_the_build_reads_the_version_from_the_package() -> None:
    # Read as text: tomllib only exists from Python 3.11 on.
    config = (ROOT / "pyproject.toml").read_text()
    assert re.search(r"^version\s*=", config, re.MULTILINE) is None
    assert re.search(r'^dynamic = \["version"\]', config, re.MULTILINE)
    assert re.search(
        r'^\[tool\.hatch\.version\]\npath = "src/arendezvous/_version\.py"$', config, re.MULTILINE
    )


def test_no_other_module_writes_a_version() -> None:
    written = [
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "src" / "arendezvous").rglob("*.py")
        if re.search(r"^__version__\s*=", path.read_text(), re.MULTILINE)
    ]
    assert written == ["src/arendezvous/_version.py"]
