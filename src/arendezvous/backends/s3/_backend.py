"""The S3 backend's handle: options, the loop-bound client, and the contract built on ``_store``.

What is S3's own (the object format, the requests, the error table, the probe) lives in
``_format`` and ``_store``; this module is the glue a shared network-backend base will take over:
checking options, opening one aiobotocore client per event loop, mapping errors, bounding calls by
the timeout, the compare-and-swap built from a conditional ``PutObject`` and a re-read, and the
polling ``wait_for_change``.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from contextlib import AsyncExitStack, contextmanager, suppress
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread

from ..._backend import (
    DEFAULT_MAX_STATE_SIZE,
    AsyncRendezvousBackend,
    RunHandle,
    Token,
    check_run_id,
    check_state,
    check_timeout,
)
from ..._compat import import_optional
from ..._errors import BackendClosedError, RendezvousConnectionError, RendezvousStateError
from ..._notify import ChangeNotifier
from ..file import _file_stem
from . import _format, _store
from ._options import (
    ADDRESSING_STYLES,
    check_bucket,
    check_endpoint,
    check_prefix,
    check_profile,
    check_region,
    check_seconds,
)
from ._token import S3Token, is_token, same_token
from ._wait import Outage, poll_pauses

__all__ = (
    "DEFAULT_MAX_POLL_INTERVAL",
    "DEFAULT_POLL_INTERVAL",
    "DEFAULT_TIMEOUT",
    "MAX_STATE_SIZE_LIMIT",
    "S3Backend",
    "S3Token",
    "UnsafeStoreError",
    "poll_pauses",
)

DEFAULT_TIMEOUT = 5.0
"""Seconds a request may take, and an outage ``wait_for_change`` rides out, before they fail."""

DEFAULT_POLL_INTERVAL = 0.1
"""Seconds between the first re-reads of a waiting ``wait_for_change``."""

DEFAULT_MAX_POLL_INTERVAL = 1.0
"""The longest pause between two re-reads of a waiting ``wait_for_change``."""

MAX_STATE_SIZE_LIMIT = 5 * 1024**3 - _format.HEADER_SIZE
"""S3's largest single ``PutObject`` (5 GiB), less the object's header."""

# Refusals whose condition still held when re-read (AWS's 409 for a conflicting conditional write
# that then failed itself) are retried this many times before the call gives up.
_MAX_WRITE_ATTEMPTS = 5

# The least time opening a client may take (see S3Backend._open_client).
_OPEN_TIMEOUT = 30.0

# Handles in this process wake each other's waiters at once; other processes are seen by polling.
_local_changes = ChangeNotifier()
# Stores (endpoint, bucket, probe key) that refused what they must refuse, in this process.
_verified_stores: set[tuple[str, str, str]] = set()


_loader_lock = threading.Lock()
_loader: Any = None


def _shared_loader(session: Any) -> Any:
    """botocore's data loader of the first session opened in this process, for all the others."""
    global _loader
    with _loader_lock:
        if _loader is None:
            _loader = session.get_component("data_loader")
        return _loader


class UnsafeStoreError(RendezvousConnectionError):
    """The S3 store does not enforce conditional writes, so no atomic compare-and-swap can be
    built on it; the backend refuses to write. Retrying does not help: use another store."""


class S3Backend(RunHandle, AsyncRendezvousBackend):
    """A handle on one run's state: the object ``<prefix>/<run_id>`` in an S3 bucket.

    :param bucket: the bucket, which must exist.
    :param prefix: the "folder" of the run objects (no leading or trailing ``/``); the run id is
        percent-encoded into one name, so any run id is safe.
    :param endpoint_url: an S3-compatible store's ``http(s)://host:port`` (default: AWS S3). It
        must not carry credentials.
    :param region: the region requests are signed for (default: botocore's configuration).
    :param profile: the AWS config profile whose credentials to use (default: botocore's chain:
        environment, ``~/.aws/credentials``, ``~/.aws/config``, container and instance roles).
    :param addressing_style: ``path`` (``host/bucket/key``; the default with an *endpoint_url*),
        ``virtual`` (``bucket.host/key``) or ``auto`` (botocore's choice; the default for AWS).
    :param timeout: how long a request may take before it raises ``RendezvousConnectionError``;
        ``wait_for_change`` rides out an outage this long before it raises.
    :param poll_interval: the first pause of ``wait_for_change`` between re-reads; each unchanged
        re-read doubles it up to *max_poll_interval*. Every pause is drawn between 75% and 100% of
        the current interval, so waiting nodes do not poll in lockstep.
    :param max_poll_interval: the longest pause between two re-reads of ``wait_for_change``
        (so a change is seen within about this long, and a waiting call costs about one
        ``GetObject`` this often).
    :param max_state_size: the largest state accepted, in bytes (at most
        :data:`MAX_STATE_SIZE_LIMIT`); a stored object larger than this allows is refused as
        ``RendezvousStateError`` without being downloaded.

    Runs only on asyncio. Credentials never appear in ``repr()`` or in error messages.
    """

    def __init__(
        self,
        bucket: str,
        run_id: str,
        *,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str | None = None,
        profile: str | None = None,
        addressing_style: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        max_poll_interval: float = DEFAULT_MAX_POLL_INTERVAL,
        max_state_size: int = DEFAULT_MAX_STATE_SIZE,
    ) -> None:
        self._run_id = check_run_id(run_id)
        self._bucket = check_bucket(bucket)
        self._prefix = check_prefix(prefix)
        self._endpoint_url = None if endpoint_url is None else check_endpoint(endpoint_url)
        self._region = check_region(region)
        self._profile = check_profile(profile)
        if addressing_style is None:
            addressing_style = "path" if endpoint_url is not None else None
        elif addressing_style not in ADDRESSING_STYLES:
            raise ValueError(f"addressing_style must be one of {', '.join(ADDRESSING_STYLES)}")
        self._addressing_style = addressing_style
        self._timeout = check_seconds("timeout", timeout)
        self._poll_interval = check_seconds("poll_interval", poll_interval)
        self._max_poll_interval = check_seconds("max_poll_interval", max_poll_interval)
        if self._max_poll_interval < self._poll_interval:
            raise ValueError("max_poll_interval must not be less than poll_interval")
        if isinstance(max_state_size, bool) or not isinstance(max_state_size, int):
            raise TypeError(f"max_state_size must be int, not {type(max_state_size).__name__}")
        if not 0 < max_state_size <= MAX_STATE_SIZE_LIMIT:
            raise ValueError(
                f"max_state_size must be between 1 and {MAX_STATE_SIZE_LIMIT} bytes "
                "(S3's largest PutObject, less the header)"
            )
        self._max_state_size = max_state_size
        self._session_module = import_optional("aiobotocore.session", "s3")

        folder = f"{self._prefix}/" if self._prefix else ""
        self._key = folder + _file_stem(self._run_id)
        self._probe_key = folder + _store.PROBE_NAME
        self._endpoint_shown = self._endpoint_url or f"AWS S3 ({self._region or 'default region'})"
        self._where = f"s3://{self._bucket}/{folder} at {self._endpoint_shown}"
        self._change_key = (self._endpoint_shown, self._bucket, self._key)
        self._what_get = f"get_state of run {run_id!r} in {self._where}"
        self._what_set = f"set_state of run {run_id!r} in {self._where}"
        self._what_wait = f"wait_for_change of run {run_id!r} in {self._where}"
        self._closed = False
        self._client: _store.S3Client | None = None
        self._stack: AsyncExitStack | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client_lock: asyncio.Lock | None = None
        self._unsafe: str | None = None

    @property
    def name(self) -> str:
        return "s3"

    @property
    def bucket(self) -> str:
        """The bucket holding the run's object."""
        return self._bucket

    @property
    def key(self) -> str:
        """The key of the run's object in :attr:`bucket`."""
        return self._key

    @property
    def endpoint_url(self) -> str | None:
        """The S3-compatible store's URL, or ``None`` for AWS S3."""
        return self._endpoint_url

    @property
    def timeout(self) -> float:
        """Seconds a request may take before it raises ``RendezvousConnectionError``."""
        return self._timeout

    def __repr__(self) -> str:
        return (
            f"S3Backend('s3://{self._bucket}/{self._prefix}', run_id={self._run_id!r}, "
            f"endpoint={self._endpoint_shown!r})"
        )

    # -- the client, one per event loop ----------------------------------------------------------

    async def _ready(self) -> _store.S3Client:
        """The client to use now: checks the handle is open and the loop is asyncio."""
        self._check_open()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            _require_asyncio()
            raise
        if self._loop is not loop:
            # The client's connections belong to the loop that opened them; a client of an
            # earlier loop can no longer be closed and is left to the garbage collector.
            self._loop, self._client, self._stack = loop, None, None
            self._client_lock = asyncio.Lock()
        client = self._client
        if client is None:
            assert self._client_lock is not None
            async with self._client_lock:
                client = self._client
                if client is None:
                    client = await self._open_client()
        return client

    async def _open_client(self) -> _store.S3Client:
        from aiobotocore.config import AioConfig

        stack = AsyncExitStack()
        opening = f"opening an S3 client for {self._where}"
        # Opening is mostly local work (botocore's models, the config files) but may ask a
        # credentials service; it gets at least _OPEN_TIMEOUT, as a first open in a busy process
        # can outlast a short request timeout.
        with self._calling(opening, timeout=max(self._timeout, _OPEN_TIMEOUT)):
            session = self._session_module.AioSession(profile=self._profile)
            # Every session loads botocore's JSON models anew (about 0.5 s of CPU) unless they
            # share one loader; the loader holds no event-loop state, so one serves the process.
            session.register_component("data_loader", _shared_loader(session))
            # botocore reads the AWS config files synchronously: do it off the event loop.
            await anyio.to_thread.run_sync(session.get_scoped_config)
            config = AioConfig(
                connect_timeout=self._timeout,
                read_timeout=self._timeout,
                # No silent retries: a write whose reply was lost must surface (its outcome is
                # unknown), and retries would stretch a call past the timeout.
                retries={"total_max_attempts": 1},
                s3={"addressing_style": self._addressing_style or "auto"},
                # The object carries its own CRC-32, checked on every read; botocore's checksums
                # would only add work and trouble stores that lack them.
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
                warm_up_loader_caches=True,  # loads botocore's JSON models off the event loop
            )
            try:
                client = await stack.enter_async_context(
                    session.create_client(
                        "s3",
                        endpoint_url=self._endpoint_url,
                        region_name=self._region,
                        config=config,
                    )
                )
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await stack.aclose()
                raise
        if self._closed:
            with anyio.CancelScope(shield=True), suppress(Exception):
                await stack.aclose()
            self._check_open()
        self._client, self._stack = client, stack
        return client

    @contextmanager
    def _calling(self, what: str, *, timeout: float | None = None) -> Iterator[None]:
        """Bound the block by the timeout; raise what failed in it as ours (cause chained)."""
        timeout = self._timeout if timeout is None else timeout
        try:
            with anyio.fail_after(timeout):
                yield
        except (RendezvousConnectionError, RendezvousStateError):
            raise
        except TimeoutError as exc:
            raise RendezvousConnectionError(f"{what}: no reply within {timeout:g} s") from exc
        except _store.ObjectTooLarge as exc:
            raise RendezvousStateError(
                f"{what}: the object {self._key!r} is {exc.size} bytes, more than this handle's "
                f"max_state_size ({self._max_state_size}) and header allow; it was left as it is"
            ) from exc
        except _store.MissingETag as exc:
            raise RendezvousConnectionError(f"{what}: {exc}") from exc
        except Exception as exc:
            if _store.is_reply(exc):
                raise RendezvousConnectionError(self._explain(what, exc)) from exc
            if isinstance(exc, _store.connection_errors()):
                raise RendezvousConnectionError(f"{what}: {type(exc).__name__}: {exc}") from exc
            raise

    def _explain(self, what: str, error: Exception) -> str:
        """The message for an error reply of the store (one the backend did not expect)."""
        outcome = _store.classify(error)
        described = _store.describe(error)
        if outcome is _store.Outcome.NO_BUCKET:
            return f"{what}: the bucket {self._bucket!r} does not exist ({described})"
        if outcome is _store.Outcome.DENIED:
            return (
                f"{what}: the store refused the request ({described}); check the credentials "
                "botocore found (environment, AWS config files, profile=) and their permissions"
            )
        return f"{what}: {described}"

    # -- the store's operations, as the contract needs them --------------------------------------

    async def _read(
        self, client: _store.S3Client, what: str
    ) -> tuple[_format.StoredState, S3Token] | None:
        self._check_open()
        with self._calling(what):
            found = await _store.read_object(
                client, self._bucket, self._key, max_size=_format.HEADER_SIZE + self._max_state_size
            )
        if found is None:
            return None
        try:
            stored = _format.decode(found.body)
        except RendezvousStateError as exc:
            raise RendezvousStateError(
                f"{what}: {exc} (object {self._key!r}, left as it is for inspection)"
            ) from exc
        return stored, S3Token(stored.incarnation.hex(), stored.counter, found.etag)

    async def _ensure_conditional_writes(self, client: _store.S3Client) -> None:
        """Refuse to write unless this store was seen refusing what it must refuse."""
        if self._unsafe is not None:
            raise UnsafeStoreError(self._unsafe)
        store = (self._endpoint_shown, self._bucket, self._probe_key)
        if store in _verified_stores:
            return
        with self._calling(f"probing conditional writes at {self._where}"):
            problem = await _store.probe_conditional_writes(client, self._bucket, self._probe_key)
        if problem is not None:
            self._unsafe = (
                f"the S3 store at {self._endpoint_shown} (bucket {self._bucket!r}) cannot hold "
                f"arendezvous runs: {problem}. A store that does not enforce conditional writes "
                "(If-None-Match: * and If-Match on PutObject) cannot make set_state an atomic "
                "compare-and-swap, so arendezvous refuses to write to it"
            )
            raise UnsafeStoreError(self._unsafe)
        _verified_stores.add(store)

    # -- the contract ----------------------------------------------------------------------------

    async def get_state(self) -> tuple[bytes, Token] | None:
        client = await self._ready()
        current = await self._read(client, self._what_get)
        return None if current is None else (current[0].state, current[1])

    async def set_state(
        self, state: bytes, token: Token | None = None
    ) -> tuple[bytes, Token, bool]:
        self._check_open()
        state = check_state(state, self._max_state_size)
        # A call cancelled before it starts must send nothing: a request already on the wire
        # could apply after the caller has moved on.
        await anyio.lowlevel.checkpoint_if_cancelled()
        client = await self._ready()
        await self._ensure_conditional_writes(client)
        if token is not None and not is_token(token):
            current = await self._read(client, self._what_set)
            return (b"", None, False) if current is None else (current[0].state, current[1], False)
        assert token is None or isinstance(token, S3Token)
        return await self._write(client, state, token)

    async def _write(
        self, client: _store.S3Client, state: bytes, token: S3Token | None
    ) -> tuple[bytes, Token, bool]:
        """Create (*token* ``None``) or replace the version *token* names; re-read on refusal."""
        writer = os.urandom(16)
        if token is None:
            incarnation, counter, if_match = os.urandom(16), 1, None
        else:
            if token.counter == _format.MAX_COUNTER:
                raise RendezvousStateError(f"{self._what_set}: the run's write counter is spent")
            incarnation, counter, if_match = (
                bytes.fromhex(token.incarnation),
                token.counter + 1,
                token.etag,
            )
        body = _format.encode(incarnation, counter, writer, state)
        for _ in range(_MAX_WRITE_ATTEMPTS):
            with self._calling(self._what_set):
                etag = await _store.put_object_if(
                    client, self._bucket, self._key, body, if_match=if_match
                )
            if isinstance(etag, str):
                _local_changes.notify(self._change_key)
                return state, S3Token(incarnation.hex(), counter, etag), True
            # Refused: S3 does not say by what, so look.
            current = await self._read(client, self._what_set)
            if current is None:
                if token is None:
                    continue  # a conflicting create failed, or the object was deleted: try again
                return b"", None, False
            stored, current_token = current
            if stored.writer == writer:
                # This very call's bytes are stored: something resent the request after its first
                # reply was lost, and the resend was refused because the first one had applied.
                _local_changes.notify(self._change_key)
                return state, current_token, True
            if token is None or current_token != token:
                return stored.state, current_token, False
            # The condition holds: the refusal was a conflict with a write that did not apply.
        raise RendezvousConnectionError(
            f"{self._what_set}: the store refused {_MAX_WRITE_ATTEMPTS} conditional writes whose "
            "condition still held when re-read"
        )

    async def wait_for_change(
        self, token: Token | None, *, timeout: float | None = None
    ) -> tuple[bytes, Token] | None:
        check_timeout(timeout)
        client = await self._ready()
        outage = Outage()
        # A first read outside the wait's deadline, so that timeout=0 still reports a change
        # that already happened.
        changed = await self._look(client, token, outage)
        if changed is not None:
            return changed
        with anyio.move_on_after(timeout):
            return await self._poll(client, token, outage)
        if outage.error is not None:
            # "No change" would be a guess: the store could not be asked.
            raise RendezvousConnectionError(
                f"{self._what_wait}: the store was unreachable when the wait timed out"
            ) from outage.error
        return None

    async def _poll(
        self, client: _store.S3Client, token: Token | None, outage: Outage
    ) -> tuple[bytes, S3Token]:
        """Re-read until the token differs, pausing ever longer (up to the cap) in between."""
        pauses = poll_pauses(self._poll_interval, self._max_poll_interval)
        while True:
            with _local_changes.watching(self._change_key) as changed:
                if outage.error is not None:
                    waited = anyio.current_time() - outage.since
                    if waited >= self._timeout:
                        raise RendezvousConnectionError(
                            f"{self._what_wait}: the store was unreachable for {waited:.3g} s"
                        ) from outage.error
                found = await self._look(client, token, outage)
                if found is not None:
                    return found
                # poll-ok: S3 has no change notification; writes of this process wake us early.
                with anyio.move_on_after(next(pauses)):
                    await changed.wait()

    async def _look(
        self, client: _store.S3Client, token: Token | None, outage: Outage
    ) -> tuple[bytes, S3Token] | None:
        """One read of a wait: the state if its token differs from *token*, else ``None``; a
        store that cannot be reached is recorded in *outage* instead of raising."""
        try:
            current = await self._read(client, self._what_wait)
        except BackendClosedError:
            raise
        except RendezvousConnectionError as exc:
            outage.failed(exc)
            return None
        outage.clear()
        if current is not None and not same_token(current[1], token):
            return current[0].state, current[1]
        return None

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        stack, self._stack, self._client = self._stack, None, None
        # Waiters of this handle re-check at once, find it closed and raise BackendClosedError.
        _local_changes.notify(self._change_key)
        if stack is None:
            return
        try:
            same_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            same_loop = False
        if same_loop:
            # Closing must finish even if the caller is being cancelled, or sockets leak.
            with anyio.CancelScope(shield=True), suppress(Exception):
                await stack.aclose()


def _require_asyncio() -> None:
    """Raise a clear error unless called from a running asyncio event loop: aiobotocore runs only
    on asyncio, and under trio it would fail deep inside with "no running event loop"."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        raise RuntimeError(
            "the s3 backend runs only on asyncio (its client, aiobotocore, does not support "
            "trio); use it from asyncio, or reach it from trio through arendezvous.SyncBackend "
            "in a worker thread"
        ) from None
