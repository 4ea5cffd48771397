"""``S3Backend``: the handle, on the network base (see the package docstring).

The base owns the option checks, the client per event loop (and the bridge from trio), closing,
and ``wait_for_change`` with its outage policy. What is S3's own is here: the client's life cycle
(:mod:`._client`), the read, the compare-and-swap built from a conditional ``PutObject`` and a
re-read after a refusal, the probe that refuses a store ignoring conditions, the polling
change feed (:mod:`._feed`), and the run lifecycle: ``delete_run`` (a conditional
``DeleteObject``), ``list_runs`` (``ListObjectsV2``) and ``expire_after``, which S3 cannot do
itself in less than whole days, enforced by reads and listings by the store's clock.
"""

from __future__ import annotations

import logging
import os
import urllib.parse
from collections.abc import Hashable
from functools import partial
from typing import Final

import anyio
import anyio.lowlevel

from ..._backend import DEFAULT_MAX_STATE_SIZE, RunInfo, Token
from ..._compat import import_optional
from ..._errors import (
    ErrorTable,
    RendezvousConnectionError,
    RendezvousStateError,
    map_exceptions,
)
from .._feed import ChangeFeed
from .._lifecycle import log_run_deleted, log_run_expired
from .._names import decode_run_name, is_hashed_name, run_name
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
    "EXPIRE_PER_LIST",
    "MAX_RUN_ID_METADATA",
    "MAX_STATE_SIZE_LIMIT",
    "S3Backend",
    "UnsafeStoreError",
)

_log = logging.getLogger("arendezvous.backends.s3")

DEFAULT_POLL_INTERVAL: Final = 0.1
"""Seconds between the first polls of a waiting ``wait_for_change``."""

DEFAULT_MAX_POLL_INTERVAL: Final = 1.0
"""The longest pause between two polls of a waiting ``wait_for_change``."""

MAX_STATE_SIZE_LIMIT: Final = 5 * 1024**3 - _format.HEADER_SIZE
"""S3's largest single ``PutObject`` (5 GiB), less the object's header."""

EXPIRE_PER_LIST: Final = 32
"""The most expired objects one ``list_runs`` looks at and deletes (two requests each); the
others are left out of the listing all the same and deleted by a later call or read."""

MAX_RUN_ID_METADATA: Final = 1800
"""The longest percent-encoded run id kept in an object's metadata (S3 allows 2 KB of user
metadata per object). A longer run id's object has a hashed name and no metadata: its run works,
but ``list_runs`` cannot name it and leaves it out."""

# Expiry compares the store's Date header with an object's Last-Modified, both HTTP dates in whole
# seconds: a measured age is within this of the true one, so a run is expired only when its
# measured age exceeds expire_after by this much (never early; at most two seconds late).
_DATE_RESOLUTION = 1.0

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
    :param expire_after: seconds after which a run nobody writes to disappears (``None``, the
        default: never). S3's own lifecycle rules count whole days, so the backend enforces it,
        by the store's clock only (a reply's ``Date`` less the object's ``Last-Modified``, to
        the second): a read (``get_state``, a waiter's poll, the re-read after a refused write)
        that finds the object idle that long deletes exactly the version it read (``DeleteObject``
        with ``If-Match``) and reports no state, and ``list_runs`` leaves out expired runs and
        deletes up to :data:`EXPIRE_PER_LIST` of them per call. A run nobody reads or lists stays
        in the bucket; a write with the token of an idle, not yet deleted object still succeeds
        (it is a write: the run lives on).

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
        expire_after: float | None = None,
    ) -> None:
        super().__init__(
            run_id, timeout=timeout, max_state_size=max_state_size, expire_after=expire_after
        )
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
        self._folder = folder
        name = run_name(self._run_id)
        self._key = folder + name
        # A hashed name does not decode back to its run id: the object keeps it in its metadata,
        # for list_runs (sent with every write, as a PutObject replaces the metadata).
        encoded = urllib.parse.quote(self._run_id, safe="")
        self._metadata: dict[str, str] | None = (
            {_store.RUN_ID_METADATA: encoded}
            if is_hashed_name(name) and len(encoded) <= MAX_RUN_ID_METADATA
            else None
        )
        # Whether the store refused If-Match on DeleteObject (501): then deletions are not
        # conditional (see delete_run).
        self._unconditional_deletes = False
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
        """``GetObject`` of the run's object, decoded; whether it reached the store, noted.

        With ``expire_after``, an object idle that long (by the store's clock) is deleted -- that
        version only -- and reported absent; if another write replaced it meanwhile, that one
        is read instead.
        """
        for _ in range(_MAX_WRITE_ATTEMPTS):
            found = await self._fetch_once(client, operation)
            if found is None or not self._expired(found[2]):
                return None if found is None else found[:2]
            assert found[2] is not None
            assert self._expire_after is not None
            api = client.api if client.api is not None else await client.open()
            try:
                deleted = await self._delete_version(api, operation, self._key, found[1].etag)
            except RendezvousConnectionError:
                client.unreachable = True  # as for a read: the feed checks the store first
                raise
            if deleted:
                log_run_expired(_log, self._run_id, found[2], self._expire_after)
                LOCAL_CHANGES.notify(self._change_key)
                return None
            # Refused: written (or deleted) since it was read: look again.
        raise RendezvousConnectionError(
            f"{self._what(operation)}: the run expired, and the store refused "
            f"{_MAX_WRITE_ATTEMPTS} deletions of the very version just read"
        )

    def _expired(self, age: float | None) -> bool:
        """Whether an object *age* seconds idle (by the store's clock) has expired."""
        expire_after = self._expire_after
        return expire_after is not None and age is not None and (
            age - _DATE_RESOLUTION >= expire_after
        )

    async def _delete_version(
        self, api: _store.S3Client, operation: str, key: str, etag: str
    ) -> bool:
        """Delete *key* if its ETag is still *etag*; whether it was deleted. A store that does not
        implement ``If-Match`` on ``DeleteObject`` gets an unconditional deletion (a write racing
        it may then be deleted with it: see :meth:`delete_run`)."""
        with self._mapped(operation), anyio.fail_after(self._timeout):
            if not self._unconditional_deletes:
                deleted = await _store.delete_object_if(api, self._bucket, key, if_match=etag)
                if deleted is not None:
                    return deleted
                self._unconditional_deletes = True
            return bool(await _store.delete_object_if(api, self._bucket, key, if_match=None))

    async def _fetch_once(
        self, client: S3Client, operation: str
    ) -> tuple[_format.StoredState, S3Token, float | None] | None:
        """One ``GetObject`` of the run's object: decoded, its token and its age."""
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
        return stored, S3Token(stored.incarnation.hex(), stored.counter, found.etag), found.age

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
                    api, self._bucket, self._key, body, if_match=if_match, metadata=self._metadata
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

    # -- the run lifecycle -----------------------------------------------------------------------

    async def _head(
        self, api: _store.S3Client, operation: str, key: str
    ) -> _store.ObjectHead | None:
        """The header bytes of *key*, and its size, ETag, age and run-id metadata (one ranged
        ``GetObject``), or ``None`` if it does not exist."""
        with self._mapped(operation), anyio.fail_after(self._timeout):
            return await _store.read_head(api, self._bucket, key, _format.HEADER_SIZE)

    async def delete_run(self) -> bool:
        """Delete the run's object, so that the run starts afresh; return whether there was one.

        One ranged ``GetObject`` reads the object's header and ETag: an object that is not an
        arendezvous S3 object (no ``ARS3`` magic) is never deleted (``RendezvousStateError``);
        one of ours is deleted with ``DeleteObject`` and ``If-Match`` of that ETag, so exactly
        the version looked at goes (a write racing it is looked at again and deleted in turn,
        at most 5 times). A store that answers ``If-Match`` on ``DeleteObject`` with 501 gets an
        unconditional ``DeleteObject`` instead: a write between the look and the deletion is
        then deleted too, which is the same as its coming just before. Cost: 2 requests.

        The next write creates the object with a new random incarnation, so no token of the
        deleted run matches again. Waiters of this process are woken and re-read at once; those
        of other processes see the run gone at their next poll.

        :raises BackendClosedError: the handle was closed.
        :raises RendezvousStateError: the key holds an object that is not an arendezvous run's.
        :raises RendezvousConnectionError: the store cannot be reached; the deletion may or may
            not have happened.
        """
        deleted: bool = await self._on_client(self._delete_run)
        return deleted

    async def _delete_run(self, client: S3Client) -> bool:
        # Cancelled before it starts: send nothing (as a write).
        await anyio.lowlevel.checkpoint_if_cancelled()
        api = client.api if client.api is not None else await client.open()
        for _ in range(_MAX_WRITE_ATTEMPTS):
            head = await self._head(api, "delete_run", self._key)
            if head is None:
                return False
            if not head.header.startswith(_format.MAGIC):
                raise RendezvousStateError(
                    f"{self._what('delete_run')}: the object {self._key!r} is not an arendezvous "
                    "S3 object; it was left as it is"
                )
            if await self._delete_version(api, "delete_run", self._key, head.etag):
                log_run_deleted(_log, self._run_id)
                LOCAL_CHANGES.notify(self._change_key)
                return True
            # Refused: rewritten or deleted since the look: look again.
        raise RendezvousConnectionError(
            f"{self._what('delete_run')}: the object changed under {_MAX_WRITE_ATTEMPTS} "
            "deletions in a row"
        )

    async def list_runs(self) -> list[RunInfo]:
        """The runs under this handle's prefix: ``ListObjectsV2``, 1,000 objects a page, of the
        objects directly under it (``Delimiter: /``), each named by
        :func:`~arendezvous.backends._names.decode_run_name`.

        * ``size``: the object's size less the 56-byte header; ``age``: the listing reply's
          ``Date`` less the object's ``LastModified``, both the store's clock (to the second);
          ``members``: ``None`` -- S3 offers no member table, and a rendezvous keeps its member
          records inside the state, in a form this backend does not read (counting them would
          cost a download and a decode per run).
        * Skipped without a request: names :func:`~arendezvous.backends._names.run_name` never
          makes (the probe object, foreign objects), objects in deeper "folders", and objects
          smaller than the header. A foreign object whose name *is* a run's name and which is
          at least a header long is listed (it is not read; ``get_state`` refuses it).
        * A hashed name (a run id too long for a name) costs a ranged ``GetObject`` of its header
          and metadata, which name the run id (checked to hash to the name); without them the
          object is skipped.
        * With ``expire_after``, expired objects are left out, and up to
          :data:`EXPIRE_PER_LIST` of them are looked at (a ranged ``GetObject``: ours, still
          idle by the store's clock?) and deleted (``DeleteObject`` with ``If-Match``); one
          written meanwhile is listed instead.

        Cost: one ``ListObjectsV2`` per 1,000 objects under the prefix, plus one ranged
        ``GetObject`` per hashed name and two requests per expired object deleted.

        :raises BackendClosedError: the handle was closed.
        :raises RendezvousConnectionError: the store cannot be reached.
        """
        runs: list[RunInfo] = await self._on_client(self._list_runs)
        return runs

    async def _list_runs(self, client: S3Client) -> list[RunInfo]:
        api = client.api if client.api is not None else await client.open()
        runs: list[RunInfo] = []
        to_look: list[tuple[str, str | None]] = []
        expired = 0
        continuation: str | None = None
        while True:
            with self._mapped("list_runs"), anyio.fail_after(self._timeout):
                page, continuation = await _store.list_page(
                    api, self._bucket, self._folder, continuation
                )
            for entry in page:
                if entry.size < _format.HEADER_SIZE:
                    continue  # not ours (or truncated, which get_state reports)
                # A hashed name also decodes, as another (short) run id: only the object's
                # metadata names its run.
                hashed = is_hashed_name(entry.name)
                run_id = None if hashed else decode_run_name(entry.name)
                if run_id is None and not hashed:
                    continue  # a name run_name never makes: the probe, a foreign object
                if self._expired(entry.age):
                    if expired < EXPIRE_PER_LIST:
                        expired += 1
                        to_look.append((entry.name, run_id))
                    continue
                if run_id is None:
                    to_look.append((entry.name, None))
                    continue
                runs.append(
                    RunInfo(run_id, entry.size - _format.HEADER_SIZE, entry.age, None)
                )
            if continuation is None:
                break
        for name, run_id in to_look:
            info = await self._look(api, name, run_id)
            if info is not None:
                runs.append(info)
        return runs

    async def _look(self, api: _store.S3Client, name: str, run_id: str | None) -> RunInfo | None:
        """A listed object that a name alone cannot list (hashed, or expired): its header says
        whether it is ours, its metadata names a hashed run; an expired one is deleted (that
        version only). Returns the run to list, or ``None``."""
        key = self._folder + name
        for _ in range(_MAX_WRITE_ATTEMPTS):
            head = await self._head(api, "list_runs", key)
            if head is None or not head.header.startswith(_format.MAGIC):
                return None  # gone since the listing, or not ours
            named = run_id
            if named is None:
                named = head.run_id
                if not named or "\x00" in named or run_name(named) != name:
                    _log.debug("%r: a hashed name whose object names no run; not listed", key)
                    return None
            if not self._expired(head.age):
                return RunInfo(named, max(0, head.size - _format.HEADER_SIZE), head.age, None)
            assert head.age is not None
            assert self._expire_after is not None
            if await self._delete_version(api, "list_runs", key, head.etag):
                log_run_expired(_log, named, head.age, self._expire_after)
                LOCAL_CHANGES.notify((self._endpoint_shown, self._bucket, key))
                return None
        return None  # rewritten under every deletion: busy, but left out of this listing
