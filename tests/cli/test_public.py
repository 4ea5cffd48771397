"""The command-line package's public modules declare ``__all__`` and document every name in it."""

from __future__ import annotations

import pytest

from test_public_api import (
    test_every_public_name_exists_and_is_documented as every_public_name_is_documented,
)

CLI_MODULES = ["arendezvous.cli", "arendezvous.cli.demo", "arendezvous.cli.inspect",
               "arendezvous.cli.check", "arendezvous.cli.runs", "arendezvous.cli.close",
               "arendezvous.cli.delete"]


@pytest.mark.parametrize("module_name", CLI_MODULES)
def test_every_public_name_is_documented(module_name: str) -> None:
    every_public_name_is_documented(module_name)
