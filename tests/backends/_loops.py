"""The network stores' test modules run their own tests on asyncio (the store clients' loop), and
the test kit's classes on both loops: a kit class takes :class:`BothLoops` first."""

from __future__ import annotations

import pytest


class BothLoops:
    """Gives a kit class (``NetworkBackendConformance``, ``MemberTableConformance``, ...) an
    ``anyio_backend`` fixture of asyncio and trio, so each of its tests runs on both."""

    @pytest.fixture(params=["asyncio", "trio"])
    def anyio_backend(self, request: pytest.FixtureRequest) -> str:
        return str(request.param)
