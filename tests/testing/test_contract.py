"""``arendezvous.contract``: the one public home of what a backend author builds on.

(Kept with the test kit's tests because the kit's example backend is its first user.)
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import arendezvous
import arendezvous.contract
from arendezvous import _backend, _errors, _members

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sqlite_backend" / "src"


def test_the_contract_module_re_exports_the_contract_and_its_helpers() -> None:
    for name in arendezvous.contract.__all__:
        value = getattr(arendezvous.contract, name)
        home = next(module for module in (_backend, _members, _errors) if hasattr(module, name))
        assert value is getattr(home, name), name
        if name in arendezvous.__all__:
            assert value is getattr(arendezvous, name), name
        ours = getattr(value, "__module__", "").startswith("arendezvous")
        if ours and (inspect.isclass(value) or inspect.isfunction(value)):
            assert value.__doc__, name
    assert {"check_state", "check_timeout", "check_run_id", "RunHandle"} <= set(
        arendezvous.contract.__all__
    )
    errors = {name for name in _errors.__all__ if name.endswith("Error")}
    assert errors <= set(arendezvous.contract.__all__)


def test_the_example_backend_needs_nothing_private() -> None:
    imported: set[str] = set()
    for path in EXAMPLE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module)
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
    ours = {name for name in imported if name.split(".")[0] == "arendezvous"}
    assert ours == {"arendezvous.contract"}
