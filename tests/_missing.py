"""What a test does when something it needs is not installed: fail under CI (which installs
everything, so a skip there would hide a broken set-up), skip loudly elsewhere."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def missing(reason: str, *, module: bool = False) -> NoReturn:
    """Fail the calling test (``CI`` set) or skip it, saying *reason*; *module*: the whole
    module, from its top level."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI installs everything the tests need: scripts/test)",
                    pytrace=False)
    pytest.skip(f"!!! SKIPPED: {reason} !!!", allow_module_level=module)
