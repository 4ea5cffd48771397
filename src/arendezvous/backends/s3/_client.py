"""The S3 backend's client on one event loop: an aiobotocore client opened on first use.

The network base binds one client to each event loop a handle is used on and opens it with no
I/O (:meth:`~arendezvous.backends._network.NetworkBackend._open_client`); an aiobotocore client is
opened by awaiting it, so the base gets a :class:`S3Client`, which opens the real client on the
first call that needs it. The client also notes for the handle's polling change feed whether the
handle's last read reached the store (:attr:`S3Client.unreachable`).
"""

from __future__ import annotations

import asyncio
import sys
import threading
from contextlib import AsyncExitStack, suppress
from typing import Any

import anyio
import anyio.to_thread

from ..._errors import BackendClosedError, ExceptionMapper
from ..._forksafe import renew_in_child

__all__ = ("OPEN_TIMEOUT", "ClientSettings", "S3Client")

OPEN_TIMEOUT = 30.0
"""The least time opening a client may take: it loads botocore's models (about 0.5 s of CPU the
first time in a process, more on a busy machine) and may ask a credentials service."""

_loader_lock = threading.Lock()
renew_in_child(sys.modules[__name__], "_loader_lock")  # see _forksafe
_loader: Any = None


def _shared_loader(session: Any) -> Any:
    """botocore's data loader of the first session opened in this process, for all the others."""
    global _loader
    with _loader_lock:
        if _loader is None:
            _loader = session.get_component("data_loader")
        return _loader


class ClientSettings:
    """How a handle's clients are made: where the store is, which profile, the timeout."""

    __slots__ = ("addressing_style", "endpoint_url", "profile", "region", "session", "timeout")

    def __init__(
        self,
        session: Any,
        *,
        endpoint_url: str | None,
        region: str | None,
        profile: str | None,
        addressing_style: str | None,
        timeout: float,
    ) -> None:
        self.session = session  # the aiobotocore.session module
        self.endpoint_url = endpoint_url
        self.region = region
        self.profile = profile
        self.addressing_style = addressing_style
        self.timeout = timeout

    @property
    def open_timeout(self) -> float:
        """Seconds opening a client may take: the timeout, and at least :data:`OPEN_TIMEOUT`."""
        return max(self.timeout, OPEN_TIMEOUT)


class S3Client:
    """One handle's aiobotocore S3 client on one event loop, opened by the first :meth:`api`.

    :ivar unreachable: the handle's last read failed to reach the store.
    """

    __slots__ = ("_closed", "_lock", "_mapper", "_settings", "_stack", "api", "unreachable")

    def __init__(self, settings: ClientSettings, mapper: ExceptionMapper) -> None:
        # mapper: the store's error table for errors while opening (bounded by open_timeout)
        self._settings = settings
        self._mapper = mapper
        self._lock = asyncio.Lock()
        self._stack: AsyncExitStack | None = None
        self._closed = False
        #: The aiobotocore client once open (``None`` before): ``client.api or await
        #: client.open()`` is the hot path.
        self.api: Any = None
        self.unreachable = False

    async def open(self) -> Any:
        """The aiobotocore client, opened now if it is not yet (once, however many call).

        :raises RendezvousConnectionError: it could not be opened (an unknown profile, ...).
        """
        async with self._lock:
            if self.api is None:
                if self._closed:
                    raise BackendClosedError("the S3 backend was closed")
                with self._mapper, anyio.fail_after(self._settings.open_timeout):
                    self.api = await self._open()
            return self.api

    async def _open(self) -> Any:
        from aiobotocore.config import AioConfig

        settings = self._settings
        session = settings.session.AioSession(profile=settings.profile)
        # Every session loads botocore's JSON models anew (about 0.5 s of CPU) unless they share
        # one loader; the loader holds no event-loop state, so one serves the process.
        session.register_component("data_loader", _shared_loader(session))
        # botocore reads the AWS config files synchronously: do it off the event loop.
        await anyio.to_thread.run_sync(session.get_scoped_config)
        config = AioConfig(
            connect_timeout=settings.timeout,
            read_timeout=settings.timeout,
            # No silent retries: a write whose reply was lost must surface (its outcome is
            # unknown), and retries would stretch a call past the timeout.
            retries={"total_max_attempts": 1},
            s3={"addressing_style": settings.addressing_style or "auto"},
            # The object carries its own CRC-32, checked on every read; botocore's checksums
            # would only add work and trouble stores that lack them.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            warm_up_loader_caches=True,  # loads botocore's JSON models off the event loop
        )
        stack = AsyncExitStack()
        try:
            api = await stack.enter_async_context(
                session.create_client(
                    "s3",
                    endpoint_url=settings.endpoint_url,
                    region_name=settings.region,
                    config=config,
                )
            )
        except BaseException:
            with anyio.CancelScope(shield=True):
                await stack.aclose()
            raise
        self._stack = stack
        return api

    async def aclose(self) -> None:
        """Close the client (on its own loop); a call opening it later is refused."""
        self._closed = True
        async with self._lock:  # an open in progress finishes first, then is closed here
            stack, self._stack, self.api = self._stack, None, None
        if stack is not None:
            with suppress(Exception):
                await stack.aclose()
