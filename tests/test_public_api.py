"""The public surface is exactly what ``__all__`` says, documented, and light to import."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys

import pytest

import arendezvous

PUBLIC_MODULES = [
    "arendezvous",
    "arendezvous.contract",
    "arendezvous.sync",
    "arendezvous.rendezvous",
    "arendezvous.backends.memory",
    "arendezvous.backends.file",
    "arendezvous.backends.redis",
    "arendezvous.backends.etcd",
    "arendezvous.backends.postgres",
    "arendezvous.backends.s3",
    "arendezvous.testing",
    "arendezvous.testing.conformance",
    "arendezvous.testing.lifecycle",
    "arendezvous.testing.members",
    "arendezvous.testing.network",
    "arendezvous.testing.wrapper",
    "arendezvous.testing.stateful",
    "arendezvous.testing.linearizability",
    "arendezvous.testing.history",
    "arendezvous.testing.faults",
    "arendezvous.testing.servers",
    "arendezvous.testing.servers.redis",
    "arendezvous.testing.servers.etcd",
    "arendezvous.testing.servers.postgres",
    "arendezvous.testing.servers.proxy",
    "arendezvous.testing.servers.seaweedfs",
    "arendezvous.integrations.torch",
    "arendezvous.cli",
]


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_every_public_name_exists_and_is_documented(module_name: str) -> None:
    module = importlib.import_module(module_name)
    assert isinstance(module.__all__, tuple)
    assert module.__doc__
    for name in module.__all__:
        obj = getattr(module, name)
        ours = getattr(obj, "__module__", "").startswith("arendezvous")
        if ours and (inspect.isclass(obj) or inspect.isfunction(obj)):
            assert obj.__doc__, f"{module_name}.{name} has no docstring"


def test_top_level_all_matches_the_public_names() -> None:
    public = {name for name in vars(arendezvous) if not name.startswith("_")}
    modules = {name for name in public if inspect.ismodule(getattr(arendezvous, name))}
    assert public - modules == set(arendezvous.__all__)


def test_error_tree() -> None:
    for name in ("RendezvousStateError", "RendezvousConnectionError", "RendezvousTimeoutError",
                 "RendezvousClosedError", "BackendClosedError"):
        assert issubclass(getattr(arendezvous, name), arendezvous.RendezvousError)
    assert issubclass(arendezvous.BackendClosedError, arendezvous.RendezvousConnectionError)


def test_import_pulls_in_no_store_client_nor_torch() -> None:
    code = (
        "import sys, arendezvous\n"
        "heavy = {'torch', 'redis', 'aetcd', 'asyncpg', 'hypothesis', 'pytest', 'trio', 'grpc'}\n"
        "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
