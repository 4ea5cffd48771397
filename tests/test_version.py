"""The version is written once, in ``arendezvous/_version.py``; the build and the package agree."""

from __future__ import annotations

import importlib.metadata
import re
import sys
from pathlib import Path

import pytest

import arendezvous

ROOT = Path(__file__).resolve().parent.parent


def test_the_installed_metadata_and_the_package_agree() -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", arendezvous.__version__)
    assert importlib.metadata.version("arendezvous") == arendezvous.__version__


@pytest.mark.skipif(sys.version_info < (3, 11), reason="tomllib is new in Python 3.11")
def test_the_build_reads_the_version_from_the_package() -> None:
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in config["project"]
    assert "version" in config["project"]["dynamic"]
    assert config["tool"]["hatch"]["version"]["path"] == "src/arendezvous/_version.py"


def test_no_other_module_writes_a_version() -> None:
    written = [
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "src" / "arendezvous").rglob("*.py")
        if re.search(r"^__version__\s*=", path.read_text(), re.MULTILINE)
    ]
    assert written == ["src/arendezvous/_version.py"]
