"""Throwaway store servers for tests, each started on 127.0.0.1 on free ports in a temp dir.

In CI (``CI`` set) a missing server binary fails the test: CI installs every server. Locally it
skips with a loud reason naming the package to install.
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterable

import pytest

__all__ = ("find_binary", "free_port")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def find_binary(name: str, *, debian_package: str, extra_paths: Iterable[str] = ()) -> str:
    """The path of server binary *name*, or fail (CI) / skip loudly (locally) if missing."""
    found = shutil.which(name)
    if found is None:
        for candidate in extra_paths:
            if os.access(candidate, os.X_OK):
                found = candidate
                break
    if found is not None:
        return found
    reason = f"{name} not found: install the Debian package {debian_package!r}"
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must install every server; see .ci/run)")
    pytest.skip(f"!!! SKIPPED: {reason} !!!")
