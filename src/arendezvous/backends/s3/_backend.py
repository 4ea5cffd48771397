"""``S3Backend``: the handle, on the network base (see the package docstring).

The base owns the option checks, the client per event loop (and the bridge from trio), closing,
and ``wait_for_change`` with its outage policy. What is S3's own is here: the client's life cycle
(:mod:`._client`), the read, the compare-and-swap built from a conditional ``PutObject`` and a
re-read after a refusal, the probe that refuses a store ignoring conditions, and the polling
change feed (:mod:`._feed`).
"""

from __future__ import annotations

import os
from collections.abc import Hashable
from functools import partial
from typing import Final

import anyio
import anyio.lowlevel

from ..._backend import DEFAULT_MAX_STATE_SIZE, Token
from ..._compat import import_optional
from ..._errors import (
    ErrorTable,
    RendezvousConnectionError,
    RendezvousStateError,
    map_exceptions,
)
from .._feed import ChangeFeed
from .._names import run_name
from .._network import DEFAULT_TIMEOUT, NetworkBackend, check_seconds
from . import _format, _store
from ._client import ClientSettings, S3Client
from ._feed import LOCAL_CHANGES, PollingFeed, PollSchedule
from ._options import (
    ADDRESSING_STYLES,
    check_bucket,
    check_endpoint,
    check_prefix,
    check_profile,
    check_region,
)
from ._token import S3Token, is_token

__all__ = (
    "DEFAULT_MAX_POLL_INTERVAL",
    "DEFAULT_POLL_INTERVAL",
    "DEFAULT_TIMEOUT",
    "MAX_STATE_SIZE_LIMIT",
    "S3Backend",
    "UnsafeStoreError",
)

DEFAULT_POLL_INTERVAL: Final = 0.1
"""Seconds between the first polls of a waiting ``wait_for_change``."""

DEFAULT_MAX_POLL_INTERVAL: Final = 1.0
"""The longest pause between two polls of a waiting ``wait_for_change``."""

MAX_STATE_SIZE_LIMIT: Final = 5 * 1024**3 - _format.HEADER_SIZE
"""S3's largest single ``PutObject`` (5 GiB), less the object's header."""

# Refusals whose condition still held when re-read (AWS's 409 for a conflicting conditional write
# that then failed itself) are retried this many times before the call gives up.
_MAX_WRITE_ATTEMPTS = 5

# Stores (endpoint, bucket, probe key) that refused what they must refuse, in this process.
_verified_stores: set[tuple[str, str, str]] = set()


class UnsafeStoreError(RendezvousConnectionError):
    """The S3 store does not enforce conditional writes, so no atomic compare-and-swap can be
    built on it; the backend refuses to write. Retrying does not help: use another store."""


class S3Backend(NetworkBackend):
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
    :param poll_interval: the first pause of ``wait_for_change`` between polls; each pause
        doubles it up to *max_poll_interval*, and a write by a handle of this process starts
        again from it. Every pause is drawn between 75% and 100% of the current interval, so
        waiting nodes do not poll in lockstep.
    :param max_poll_interval: the longest pause between two polls (so a change is seen within
        about this long, and a waiting handle costs about one ``GetObject`` this often).
    :param max_state_size: the largest state accepted, in bytes (at most
        :data:`MAX_STATE_SIZE_LIMIT`); a stored object larger than this allows is refused as
        ``RendezvousStateError`` without being downloaded.

    Runs on asyncio and trio (there on arendezvous's asyncio loop thread). Share a handle freely
    between tasks; all its waiters share one polling feed. Cancellation: a ``PutObject`` is
    applied entirely or not at all; a call cancelled before it began sends nothing. Credentials
    never appear in ``repr()`` or in error messages.
    """

    NAME = "s3"
    MAX_STATE_SIZE_LIMIT = MAX_STATE_SIZE_LIMIT
    MAX_STATE_SIZE_REASON = "S3's largest PutObject, less the object's header"
    # A polling feed costs a GetObject per pause while it runs: it stops a second after its last
    # waiter left (a task that waits again and again keeps its schedule; a new feed restarts it).
    FEED_LINGER = 1.0

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
        super().__init__(run_id, timeout=timeout, max_state_size=max_state_size)
        self._bucket = check_bucket(bucket)
        self._prefix = check_prefix(prefix)
        self._endpoint_url = None if endpoint_url is None else check_endpoint(endpoint_url)
        region, profile = check_region(region), check_profile(profile)
        if addressing_style is None:
            addressing_style = "path" if endpoint_url is not None else None
        elif addressing_style not in ADDRESSING_STYLES:
            raise ValueError(f"addressing_style must be one of {', '.join(ADDRESSING_STYLES)}")
        self._poll_interval = check_seconds("poll_interval", poll_interval)
        self._max_poll_interval = check_seconds("max_poll_interval", max_poll_interval)
        if self._max_poll_interval < self._poll_interval:
            raise ValueError("max_poll_interval must not be less than poll_interval")
        self._settings = ClientSettings(
            import_optional("aiobotocore.session", "s3"),
            endpoint_url=self._endpoint_url,
            region=region,
            profile=profile,
            addressing_style=addressing_style,
            timeout=self._timeout,
        )
        folder = f"{self._prefix}/" if self._prefix else ""
        self._key = folder + run_name(self._run_id)
        self._probe_key = folder + _store.PROBE_NAME
        self._endpoint_shown = self._endpoint_url or f"AWS S3 ({region or 'default region'})"
        self._where = f"s3://{self._bucket}/{folder} at {self._endpoint_shown}"
        self._change_key = (self._endpoint_shown, self._bucket, self._key)
        self._max_object_size = _format.HEADER_SIZE + self._max_state_size
        self._unsafe: str | None = None

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
    def poll_interval(self) -> float:
        """The shortest pause between two polls of a waiting ``wait_for_change``."""
        return self._poll_interval

    @property
    def max_poll_interval(self) -> float:
        """The longest pause between two polls of a waiting ``wait_for_change``."""
        return self._max_poll_interval

    def __repr__(self) -> str:
        return (
            f"S3Backend('s3://{self._bucket}/{self._prefix}', run_id={self._run_id!r}, "
            f"endpoint={self._endpoint_shown!r})"
        )

    # -- the client and the change feed ----------------------------------------------------------

    def _open_client(self) -> S3Client:
        opening = map_exceptions(
            self._error_table(),
            what=partial(self._what, "opening the S3 client"),
            timeout=self._settings.open_timeout,
        )
        return S3Client(self._settings, opening)

    async def _close_client(self, client: S3Client) -> None:
        await client.aclose()

    def _error_table(self) -> ErrorTable:
        return _store.error_table()

    def _topic(self) -> Hashable:
        return self._key

    def _ping_interval(self) -> float:
        return self._max_poll_interval  # the feed hints at least this often: it never falls silent

    def _make_feed(self, client: S3Client) -> ChangeFeed:
        return PollingFeed(
            client,
            self._key,
            self._change_key,
            PollSchedule(self._poll_interval, self._max_poll_interval),
            partial(self._read, client),
        )

    # -- reads and writes ------------------------------------------------------------------------

    async def _read(self, client: S3Client) -> tuple[bytes, Token] | None:
        found = await self._fetch(client, "get_state")
        return None if found is None else (found[0].state, found[1])

    async def _fetch(
        self, client: S3Client, operation: str
    ) -> tuple[_format.StoredState, S3Token] | None:
        """``GetObject`` of the run's object, decoded; whether it reached the store, noted."""
        api = client.api if client.api is not None else await client.open()
        try:
            with self._mapped(operation), anyio.fail_after(self._timeout):
                found = await _store.read_object(
                    api, self._bucket, self._key, max_size=self._max_object_size
                )
        except RendezvousConnectionError:
            client.unreachable = True
            raise
        client.unreachable = False
        if found is None:
            return None
        try:
            stored = _format.decode(found.body)
        except RendezvousStateError as exc:
            raise RendezvousStateError(
                f"{self._what(operation)}: {exc} (object {self._key!r}, left as it is for "
                "inspection)"
            ) from exc
        return stored, S3Token(stored.incarnation.hex(), stored.counter, found.etag)

    async def _ensure_conditional_writes(self, api: _store.S3Client) -> None:
        """Refuse to write unless this store was seen refusing what it must refuse."""
        if self._unsafe is not None:
            raise UnsafeStoreError(self._unsafe)
        store = (self._endpoint_shown, self._bucket, self._probe_key)
        if store in _verified_stores:
            return
        with self._mapped("probing conditional writes"), anyio.fail_after(self._timeout):
            problem = await _store.probe_conditional_writes(api, self._bucket, self._probe_key)
        if problem is not None:
            self._unsafe = (
                f"the S3 store at {self._endpoint_shown} (bucket {self._bucket!r}) cannot hold "
                f"arendezvous runs: {problem}. A store that does not enforce conditional writes "
                "(If-None-Match: * and If-Match on PutObject) cannot make set_state an atomic "
                "compare-and-swap, so arendezvous refuses to write to it"
            )
            raise UnsafeStoreError(self._unsafe)
        _verified_stores.add(store)

    async def _swap(
        self, client: S3Client, state: bytes, token: Token | None
    ) -> tuple[bytes, Token, bool]:
        # A call cancelled before it starts must send nothing: a request already on the wire
        # could apply after the caller has moved on.
        await anyio.lowlevel.checkpoint_if_cancelled()
        api = client.api if client.api is not None else await client.open()
        await self._ensure_conditional_writes(api)
        if token is not None and not is_token(token):
            current = await self._fetch(client, "set_state")
            return (b"", None, False) if current is None else (current[0].state, current[1], False)
        assert token is None or isinstance(token, S3Token)
        writer = os.urandom(16)
        if token is None:
            incarnation, counter, if_match = os.urandom(16), 1, None
        else:
            if token.counter == _format.MAX_COUNTER:
                raise RendezvousStateError(
                    f"{self._what('set_state')}: the run's write counter is spent"
                )
            incarnation, counter, if_match = (
                bytes.fromhex(token.incarnation),
                token.counter + 1,
                token.etag,
            )
        body = _format.encode(incarnation, counter, writer, state)
        for _ in range(_MAX_WRITE_ATTEMPTS):
            with self._mapped("set_state"), anyio.fail_after(self._timeout):
                etag = await _store.put_object_if(
                    api, self._bucket, self._key, body, if_match=if_match
                )
            if isinstance(etag, str):
                LOCAL_CHANGES.notify(self._change_key)
                return state, S3Token(incarnation.hex(), counter, etag), True
            # Refused: S3 does not say by what, so look.
            current = await self._fetch(client, "set_state")
            if current is None:
                if token is None:
                    continue  # a conflicting create failed, or the object was deleted: try again
                return b"", None, False
            stored, current_token = current
            if stored.writer == writer:
                # This very call's bytes are stored: something resent the request after its
                # first reply was lost, and the resend was refused because the first had applied.
                LOCAL_CHANGES.notify(self._change_key)
                return state, current_token, True
            if token is None or current_token != token:
                return stored.state, current_token, False
            # The condition holds: the refusal was a conflict with a write that did not apply.
        raise RendezvousConnectionError(
            f"{self._what('set_state')}: the store refused {_MAX_WRITE_ATTEMPTS} conditional "
            "writes whose condition still held when re-read"
        )
