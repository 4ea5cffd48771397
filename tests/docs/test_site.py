"""The documentation site builds in strict mode (a broken link or reference fails it), its API
reference covers every public module, and every public name it renders has a docstring."""

from __future__ import annotations

import importlib
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from test_public_api import PUBLIC_MODULES

pytestmark = pytest.mark.slow

REPOSITORY = Path(__file__).resolve().parents[2]
REFERENCE = REPOSITORY / "docs" / "reference"


def test_the_site_builds_in_strict_mode(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=REPOSITORY, capture_output=True, text=True, timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "reference" / "rendezvous" / "index.html").exists()


def _rendered_modules() -> set[str]:
    modules = set()
    for page in REFERENCE.glob("*.md"):
        modules |= set(re.findall(r"^::: ([\w.]+)$", page.read_text(), re.M))
    return modules


def test_the_reference_covers_every_public_module() -> None:
    rendered = _rendered_modules()
    missing = [name for name in PUBLIC_MODULES if name not in rendered]
    assert not missing, f"public modules missing from docs/reference/: {missing}"


@pytest.mark.parametrize("module_name", sorted(PUBLIC_MODULES))
def test_every_public_member_is_documented(module_name: str) -> None:
    module = importlib.import_module(module_name)
    undocumented = []
    for name in getattr(module, "__all__", ()):
        obj = getattr(module, name)
        if not getattr(obj, "__module__", "").startswith("arendezvous"):
            continue
        if (inspect.isclass(obj) or inspect.isfunction(obj)) and not obj.__doc__:
            undocumented.append(name)
        if inspect.isclass(obj):
            for member, value in vars(obj).items():
                if member.startswith(("_", "test")) or not (inspect.isfunction(value)
                                                  or isinstance(value, property)):
                    continue
                if not value.__doc__ and not _inherits_doc(obj, member):
                    undocumented.append(f"{name}.{member}")
    assert not undocumented, f"{module_name}: no docstring on {undocumented}"


def _inherits_doc(cls: type, member: str) -> bool:
    """Whether *member* overrides a documented method of a base class (its docs apply)."""
    return any(getattr(getattr(base, member, None), "__doc__", None) for base in cls.__mro__[1:])
