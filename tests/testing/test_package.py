"""``arendezvous.testing`` re-exports every public name of the kit, each imported on first use."""

from __future__ import annotations

import inspect
import subprocess
import sys
import types

import pytest

import arendezvous.testing
from arendezvous.testing import _lazy


def test_every_name_in_all_resolves_and_is_documented() -> None:
    for name in arendezvous.testing.__all__:
        value = getattr(arendezvous.testing, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert value.__doc__, f"arendezvous.testing.{name} has no docstring"
    assert set(arendezvous.testing.__all__) <= set(dir(arendezvous.testing))


def test_all_is_exactly_what_the_type_checking_block_imports() -> None:
    exports = _lazy.lazy_exports(inspect.getsource(arendezvous.testing))
    assert sorted(exports) == sorted(arendezvous.testing.__all__)


def test_the_names_are_the_submodules_objects() -> None:
    from arendezvous.testing import (
        BackendConformance,
        FaultyBackend,
        RecordingBackend,
        backend_state_machine,
        check,
    )
    from arendezvous.testing.conformance import BackendConformance as from_conformance
    from arendezvous.testing.faults import FaultyBackend as from_faults
    from arendezvous.testing.history import RecordingBackend as from_history
    from arendezvous.testing.linearizability import check as from_linearizability
    from arendezvous.testing.stateful import backend_state_machine as from_stateful

    assert BackendConformance is from_conformance
    assert backend_state_machine is from_stateful
    assert check is from_linearizability
    assert RecordingBackend is from_history
    assert FaultyBackend is from_faults


def test_an_unknown_name_raises_attribute_error() -> None:
    with pytest.raises(AttributeError, match="has no attribute 'BackendConformanse'"):
        getattr(arendezvous.testing, "BackendConformanse")  # noqa: B009


def test_importing_the_kit_imports_no_test_tool() -> None:
    code = (
        "import sys, arendezvous.testing\n"
        "tools = {'pytest', 'hypothesis', 'trio', '_pytest'}\n"
        "print(sorted(tools & {m.split('.')[0] for m in sys.modules}))\n"
        "from arendezvous.testing import check, RecordingBackend, FaultyBackend\n"
        "print(sorted(tools & {m.split('.')[0] for m in sys.modules}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[:2] == ["[]", "[]"]


def test_without_source_the_package_imports_eagerly() -> None:
    module = types.ModuleType("no_source_here")
    sys.modules[module.__name__] = module
    try:
        assert _lazy.install_lazy_exports(module.__name__) is False
        assert not hasattr(module, "__getattr__")
    finally:
        del sys.modules[module.__name__]


def test_lazy_exports_reads_only_type_checking_imports() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "from .eager import Eager as Eager\n"
        "if TYPE_CHECKING or not install():\n"
        "    from .a import One as One\n"
        "    from ..b.c import two as three\n"
        "if OTHER:\n"
        "    from .d import Four as Four\n"
    )
    assert _lazy.lazy_exports(source) == {"One": (".a", "One"), "three": ("..b.c", "two")}
