"""``RedisBackend``: the handle, on the network base (see the package docstring)."""

from __future__ import annotations

import functools
import inspect
import itertools
import math
import os
from collections.abc import Awaitable, Callable, Hashable
from typing import TYPE_CHECKING, Any

import anyio

from ..._backend import DEFAULT_MAX_STATE_SIZE, RunInfo, Token
from ..._compat import import_optional
from ..._errors import ErrorTable, RendezvousConnectionError, RendezvousStateError
from .._feed import ChangeFeed
from .._network import DEFAULT_TIMEOUT, NetworkBackend
from .._urlparse import TlsOptions, merge_alias
from ._feed import PubSubFeed
from ._members import RedisMemberTable, member_key
from ._protocol import (
    DELETE_RUN_SCRIPT,
    DELETE_RUN_SHA,
    FORMAT,
    LIST_RUNS_SCRIPT,
    LIST_RUNS_SHA,
    MAX_STATE_SIZE_LIMIT,
    NO_INCARNATION,
    SET_STATE_SCRIPT,
    SET_STATE_SHA,
    RedisToken,
    decode_token,
    error_table,
    sendable,
)

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ("DEFAULT_KEY_PREFIX", "RedisBackend")

DEFAULT_KEY_PREFIX = "arendezvous:"
"""Prefix of every run's key (and change channel) unless the backend is given another."""

_SCAN_COUNT = 1000
"""Keys ``SCAN`` looks at per call while ``list_runs`` looks for runs: bounded work per call."""

_LIST_BATCH = 256
"""Runs ``list_runs`` asks about per script call (two keys each)."""

_GLOB_SPECIAL = frozenset(b"\\*?[]")
"""What ``SCAN MATCH`` reads as a pattern; escaped in a key prefix, which is matched literally."""

_CERT_REQS = {"full": ("required", True), "ca": ("required", False), "none": ("none", False)}
_SSL_CERT_REQS = ("none", "optional", "required")


def _redis_modules() -> Any:
    """Import redis-py's asyncio client, or raise the ImportError naming the extra."""
    return import_optional("redis.asyncio", "redis")


@functools.cache
def _no_setinfo() -> dict[str, None]:
    """The client options that stop every new connection announcing the client library (CLIENT
    SETINFO, a round trip or two): a rendezvous of a thousand handles opens two thousand
    connections at once. Found once per process: redis-py 8 names it ``driver_info``, older
    versions ``lib_name`` and ``lib_version``."""
    if "driver_info" in inspect.signature(_redis_modules().Redis.__init__).parameters:
        return {"driver_info": None}
    return {"lib_name": None, "lib_version": None}


class RedisBackend(NetworkBackend):
    """A handle on one run's state in Redis (or Valkey), in the hash ``<key_prefix><run_id>``.

    Connect either with connection parameters (``host``, ``port``, ``db``, ``username``,
    ``password`` and the TLS options), from which the backend builds and owns its client, or with
    an existing ``redis.asyncio.Redis`` *client*, which the caller owns: it is not closed by
    :meth:`aclose`, it must not decode responses, and its own timeouts and retry policy apply
    beneath this backend's *timeout*.

    :param key_prefix: prepended to *run_id* to form the key; the change channel has the same
        name as the key.
    :param timeout: how long the store may take to answer before a call raises
        ``RendezvousConnectionError``: a client built here applies it to every connect, send
        and reply (its socket timeouts); a caller's client gets it as a deadline on each call.
        ``wait_for_change`` rides out an outage this long before it raises, and checks a silent
        subscription with a PING this often.
    :param max_state_size: the largest state accepted, in bytes; at most
        :data:`MAX_STATE_SIZE_LIMIT` (Redis's own limit on a string).
    :param expire_after: seconds after which a run nobody writes to disappears (``None``, the
        default: never). Every write of the state or of a member record sets both of the run's
        keys to expire that long after it (``PEXPIRE``, in the same script as the write), so a
        heartbeat keeps its run alive; Redis removes the keys once they expire, and reads find
        nothing from then on. Give every handle of a run the same value: a handle without one
        leaves the keys' expiry as it is.
    :param tls: use TLS (implied by any other TLS option); ``ssl`` is its older name.
    :param tls_ca_file: PEM file of the CAs to trust (older name ``ssl_ca_certs``).
    :param tls_cert_file: client certificate, for servers that demand one (``ssl_certfile``).
    :param tls_key_file: its private key (``ssl_keyfile``).
    :param tls_verify: ``full`` (default), ``ca`` or ``none``; the older ``ssl_cert_reqs``
        (``required``, ``optional``, ``none``) and ``ssl_check_hostname`` say the same in
        redis-py's terms.

    Runs on asyncio and trio (there on arendezvous's asyncio loop thread). Share a handle freely
    between tasks; all its waiters share one subscription. Cancellation: a cancelled
    ``set_state`` either ran its script entirely or not at all (Redis runs scripts atomically);
    the connection it was using is closed rather than returned to the pool with a reply pending,
    so later calls never read a stale reply. Credentials never appear in ``repr()`` or in error
    messages.
    """

    NAME = "redis"
    MAX_STATE_SIZE_LIMIT = MAX_STATE_SIZE_LIMIT
    MAX_STATE_SIZE_REASON = "Redis's proto-max-bulk-len"

    def __init__(
        self,
        run_id: str,
        *,
        client: Redis | None = None,
        host: str | None = None,
        port: int | None = None,
        db: int | None = None,
        username: str | None = None,
        password: str | None = None,
        tls: bool | None = None,
        tls_ca_file: str | None = None,
        tls_cert_file: str | None = None,
        tls_key_file: str | None = None,
        tls_verify: str | None = None,
        ssl: bool | None = None,
        ssl_ca_certs: str | None = None,
        ssl_certfile: str | None = None,
        ssl_keyfile: str | None = None,
        ssl_cert_reqs: str | None = None,
        ssl_check_hostname: bool | None = None,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        timeout: float = DEFAULT_TIMEOUT,
        max_state_size: int = DEFAULT_MAX_STATE_SIZE,
        expire_after: float | None = None,
    ) -> None:
        super().__init__(
            run_id, timeout=timeout, max_state_size=max_state_size, expire_after=expire_after
        )
        if not isinstance(key_prefix, str):
            raise TypeError(f"key_prefix must be str, not {type(key_prefix).__name__}")
        if ssl_cert_reqs is not None and ssl_cert_reqs not in _SSL_CERT_REQS:
            raise ValueError(f"ssl_cert_reqs must be one of {', '.join(_SSL_CERT_REQS)}")
        if tls_verify is not None and (ssl_cert_reqs, ssl_check_hostname) != (None, None):
            raise ValueError("give tls_verify or its older forms ssl_cert_reqs and "
                             "ssl_check_hostname, not both")  # fmt: skip
        tls_options = TlsOptions.build(
            tls=merge_alias("tls", tls, "ssl", ssl),
            tls_ca_file=merge_alias("tls_ca_file", tls_ca_file, "ssl_ca_certs", ssl_ca_certs),
            tls_cert_file=merge_alias("tls_cert_file", tls_cert_file, "ssl_certfile", ssl_certfile),
            tls_key_file=merge_alias("tls_key_file", tls_key_file, "ssl_keyfile", ssl_keyfile),
            tls_verify=tls_verify,
        )
        redis_asyncio = _redis_modules()
        from redis import exceptions

        self._exceptions = exceptions
        self._errors = error_table(exceptions)
        self._prefix = key_prefix.encode("utf-8", "surrogatepass")
        self._key = self._prefix + run_id.encode("utf-8", "surrogatepass")
        self._member_key = member_key(self._key)
        # What the scripts take: whole milliseconds, rounded up so a run never expires early.
        self._expiry_ms = (
            b"0" if self._expire_after is None else b"%d" % math.ceil(self._expire_after * 1000)
        )
        # Unique per handle, process and call, so a retried script recognises its own earlier
        # write and nothing else's (a forked child draws a new prefix: see _swap).
        self._writer_prefix = os.urandom(8).hex()
        self._writer_pid = os.getpid()
        self._writes = itertools.count()
        self._callers_client = client
        self._member_table: RedisMemberTable | None = None
        self._client_kwargs: dict[str, Any] = {}
        old_verify = ssl_cert_reqs is not None or ssl_check_hostname is not None
        if client is not None:
            given = (host, port, db, username, password, ssl_cert_reqs, ssl_check_hostname)
            if tls_options.enabled or any(value is not None for value in given):
                raise ValueError("pass either client or connection parameters, not both")
            if not isinstance(client, redis_asyncio.Redis):
                raise TypeError(
                    f"client must be a redis.asyncio.Redis, not {type(client).__name__}"
                )
            if client.get_encoder().decode_responses:
                raise ValueError("the client must not decode responses (decode_responses=False)")
            self._where = "a caller's redis.asyncio client"
            return
        if not tls_options.enabled and old_verify:
            raise ValueError("ssl_cert_reqs and ssl_check_hostname need TLS (a rediss:// URL)")
        if db is not None and (isinstance(db, bool) or not isinstance(db, int) or db < 0):
            raise ValueError("db must be a non-negative int")
        host, port, db = host or "localhost", 6379 if port is None else port, db or 0
        shown_host = f"[{host}]" if ":" in host else host
        self._where = f"{'rediss' if tls_options.enabled else 'redis'}://{shown_host}:{port}/{db}"
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        self._client_kwargs = {
            "host": host,
            "port": port,
            "db": db,
            "username": username,
            "password": password,
            "socket_timeout": self._timeout,
            "socket_connect_timeout": self._timeout,
            # No silent retries: a script whose reply was lost must surface as a connection
            # error (its outcome is unknown), and an outage must fail within the timeout.
            "retry": Retry(NoBackoff(), 0),
            "decode_responses": False,
        }
        self._client_kwargs.update(_no_setinfo())
        try:
            from redis.maint_notifications import MaintNotificationsConfig
        except ImportError:  # redis-py < 7 has no maintenance notifications to turn off
            pass
        else:
            # With them "auto" (the default), the pool skips its check for connections that
            # the server closed while idle, and the first call after a restart fails.
            self._client_kwargs["maint_notifications_config"] = MaintNotificationsConfig(
                enabled=False
            )
        if tls_options.enabled:
            cert_reqs, check_hostname = _CERT_REQS[tls_options.verify]
            files = {
                "ssl_ca_certs": tls_options.ca_file,
                "ssl_certfile": tls_options.cert_file,
                "ssl_keyfile": tls_options.key_file,
                "ssl_cert_reqs": ssl_cert_reqs or cert_reqs,
                "ssl_check_hostname": (
                    check_hostname if ssl_check_hostname is None else ssl_check_hostname
                ),
            }
            self._client_kwargs["ssl"] = True
            self._client_kwargs.update({k: v for k, v in files.items() if v is not None})

    @property
    def key(self) -> bytes:
        """The Redis key of the run's hash (also the name of its change channel)."""
        return self._key

    def member_table(self) -> RedisMemberTable:
        """The run's member records, in the hash ``<key>\\x00members`` beside the state (ages by
        the server's clock; see :class:`RedisMemberTable`). One per handle, closed with it."""
        table = self._member_table
        if table is None:
            table = self._member_table = RedisMemberTable(self)
        return table

    def __repr__(self) -> str:
        return f"RedisBackend({self._where!r}, run_id={self._run_id!r}, key={self._key!r})"

    # -- the client ----------------------------------------------------------------------------

    def _open_client(self) -> Redis:
        if self._callers_client is not None:
            return self._callers_client
        client: Redis = _redis_modules().Redis(**self._client_kwargs)
        return client

    async def _close_client(self, client: Redis) -> None:
        if self._callers_client is None:
            await client.aclose()

    def _make_feed(self, client: Redis) -> ChangeFeed:
        return PubSubFeed(
            client,
            errors=self._errors,
            what=self._what("wait_for_change"),
            timeout=self._timeout,
            closed=(self._exceptions.RedisError,),
        )

    def _topic(self) -> Hashable:
        return self._key

    def _error_table(self) -> ErrorTable:
        return self._errors

    async def _execute(self, client: Redis, operation: str, *args: object) -> Any:
        """Run one command within the timeout, errors mapped.

        A client built here enforces the timeout on every socket step itself (measured: an anyio
        deadline per call costs about a tenth of a local round trip); a caller's client, whose
        timeouts are unknown, gets an explicit deadline.
        """
        execute: Callable[..., Awaitable[Any]] = client.execute_command
        with self._mapped(operation):
            if self._callers_client is None:
                return await execute(*args)
            with anyio.fail_after(self._timeout):
                return await execute(*args)

    async def _run_script(
        self, client: Redis, operation: str, script: str, sha: str, *arguments: object
    ) -> Any:
        """One ``EVALSHA`` of *script* (by its SHA-1 *sha*) within the timeout, errors mapped.

        A server that restarted or was flushed has forgotten the script and answers
        ``NOSCRIPT``; then the script is sent whole with ``EVAL``, which runs and caches it.
        """
        try:
            return await self._execute(client, operation, "EVALSHA", sha, *arguments)
        except RendezvousConnectionError as exc:
            if not isinstance(exc.__cause__, self._exceptions.NoScriptError):
                raise
            return await self._execute(client, operation, "EVAL", script, *arguments)

    # -- reads and writes ----------------------------------------------------------------------

    async def _read(self, client: Redis) -> tuple[bytes, Token] | None:
        fields = await self._execute(client, "get_state", "HGETALL", self._key)
        if not fields:
            return None
        state = fields.get(b"state")
        if fields.get(b"format") != FORMAT or state is None:
            raise RendezvousStateError(
                f"{self._what('get_state')}: the hash {self._key!r} is not an arendezvous/1 state"
            )
        return state, decode_token(fields.get(b"incarnation"), fields.get(b"counter"))

    async def _swap(
        self, client: Redis, state: bytes, token: Token | None
    ) -> tuple[bytes, Token, bool]:
        incarnation: str | bytes
        if token is None:
            has_token, incarnation, counter = b"0", os.urandom(16).hex(), 0
        elif sendable(token):
            assert isinstance(token, RedisToken)
            has_token, incarnation, counter = b"1", token.incarnation, token.counter
        else:
            has_token, incarnation, counter = b"1", NO_INCARNATION, 0
        if os.getpid() != self._writer_pid:
            # A forked child would repeat its parent's writer ids, and a stale write of the child
            # could then pass for the parent's successful one.
            self._writer_prefix, self._writer_pid = os.urandom(8).hex(), os.getpid()
        writer = f"{self._writer_prefix}-{next(self._writes)}"
        reply = await self._run_script(
            client, "set_state", SET_STATE_SCRIPT, SET_STATE_SHA,
            2, self._key, self._member_key, state, has_token, incarnation, counter, writer,
            self._expiry_ms,
        )
        status = reply[0]
        if status == 1:
            return state, RedisToken(reply[1].decode("ascii"), int(reply[2])), True
        if status == 0:
            if len(reply) == 1:
                return b"", None, False
            return reply[3], decode_token(reply[1], reply[2]), False
        reason = reply[1].decode("utf-8", "replace") if len(reply) > 1 else "unknown"
        raise RendezvousStateError(f"{self._what('set_state')}: {reason} (key {self._key!r})")

    # -- the run lifecycle ---------------------------------------------------------------------

    async def delete_run(self) -> bool:
        """Delete the run's state hash and member hash in one script (one atomic step), and
        publish a notice so that waiters re-read and find the state gone.

        The next write creates the run afresh with a new incarnation, so no token or member
        version of the deleted run ever matches again. Returns whether either key existed.

        :raises BackendClosedError: the handle was closed.
        :raises RendezvousConnectionError: the server cannot be reached; the deletion may or may
            not have happened.
        """
        deleted: bool = await self._on_client(self._delete_run)
        return deleted

    async def _delete_run(self, client: Redis) -> bool:
        deleted = await self._run_script(
            client, "delete_run", DELETE_RUN_SCRIPT, DELETE_RUN_SHA,
            2, self._key, self._member_key,
        )  # fmt: skip
        return bool(deleted)

    async def list_runs(self) -> list[RunInfo]:
        """The runs under this handle's key prefix, found with ``SCAN`` (never ``KEYS``).

        ``SCAN MATCH <prefix>*`` walks the database about 1,000 keys per call, so the number of
        calls grows with the whole database's keys, each call's work bounded; then one script
        per 256 runs reads each run's state size (``HSTRLEN``), its member count and the server
        times of the last writes of both hashes, and the server's ``TIME`` for the age: O(runs)
        on the server, no member record read. Keys under the prefix that are not an
        arendezvous state or member hash are skipped. Expired keys are not listed (Redis hides
        them from ``SCAN`` and scripts).

        :raises BackendClosedError: the handle was closed.
        :raises RendezvousConnectionError: the server cannot be reached.
        """
        runs: list[RunInfo] = await self._on_client(self._list_runs)
        return runs

    def _run_of(self, key: bytes) -> bytes | None:
        """The run id (encoded) whose state or member key *key* is, or ``None``: not one."""
        if not key.startswith(self._prefix):
            return None
        rest = key[len(self._prefix):]
        if rest.endswith(b"\x00members"):
            rest = rest[: -len(b"\x00members")]
        if not rest or b"\x00" in rest:
            return None  # no run id is empty or holds a NUL
        return rest

    async def _list_runs(self, client: Redis) -> list[RunInfo]:
        pattern = b"".join(
            b"\\" + bytes([byte]) if byte in _GLOB_SPECIAL else bytes([byte])
            for byte in self._prefix
        ) + b"*"
        found: dict[bytes, None] = {}  # SCAN may return a key twice: a set, in order
        cursor: Any = 0
        while True:
            cursor, keys = await self._execute(
                client, "list_runs", "SCAN", cursor, "MATCH", pattern, "COUNT", _SCAN_COUNT
            )
            for key in keys:
                run = self._run_of(key)
                if run is not None:
                    found[run] = None
            if int(cursor) == 0:
                break
        names = list(found)
        runs: list[RunInfo] = []
        for start in range(0, len(names), _LIST_BATCH):
            batch = names[start : start + _LIST_BATCH]
            keys = [key for run in batch for key in (self._prefix + run,
                                                     member_key(self._prefix + run))]
            reply = await self._run_script(
                client, "list_runs", LIST_RUNS_SCRIPT, LIST_RUNS_SHA, len(keys), *keys
            )
            now = reply[0]
            for index, run in enumerate(batch):
                size, written, records, members_written = reply[1 + 4 * index : 5 + 4 * index]
                if size < 0 and records == -2:
                    continue  # gone since the SCAN, or not ours
                try:
                    run_id = run.decode("utf-8", "surrogatepass")
                except UnicodeDecodeError:
                    continue  # no run id encodes to these bytes: not ours
                last = max(written, members_written)
                runs.append(RunInfo(
                    run_id,
                    size if size >= 0 else None,
                    max(0, now - last) / 1e6 if last >= 0 else None,
                    0 if records == -2 else (records if records >= 0 else None),
                ))  # fmt: skip
        return runs
