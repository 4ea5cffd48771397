"""The Redis backend: one hash per run in Redis or Valkey, written by one Lua script.

A run's state lives in the hash ``<key_prefix><run_id>`` with the fields ``format``,
``incarnation``, ``counter``, ``state`` and ``writer``. Every ``set_state`` is a single ``EVALSHA``
of :data:`SET_STATE_SCRIPT`, which compares the caller's token with the stored one, writes the new
state and counter, and ``PUBLISH``es a change notice, all atomically (Redis runs a script to the
end before serving anything else), so there is no ``WATCH``/``MULTI`` retry loop and a losing
writer gets the current state from the same reply. ``get_state`` is one ``HGETALL``.

The token is a :class:`RedisToken`: the hash's *incarnation* (128 random bits drawn by the writer
that created the hash) and its *counter*. The counter never repeats within an incarnation and a
hash deleted and created again gets a new incarnation, so no token ever comes back (no ABA).

``wait_for_change`` subscribes to the channel named like the key, waits for the subscription to be
confirmed, and only then re-reads the state, so no write can slip in between unseen. A notice is
only a hint: the state is re-read after every notice and after every reconnect.

The client, redis-py's ``redis.asyncio``, runs only on asyncio; under trio every call raises a
``RuntimeError`` saying so.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import math
import os
import re
import urllib.parse
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

import anyio

from .._backend import (
    DEFAULT_MAX_STATE_SIZE,
    AsyncRendezvousBackend,
    RunHandle,
    Token,
    check_run_id,
    check_state,
    check_timeout,
)
from .._compat import import_optional, require_asyncio
from .._errors import (
    BackendClosedError,
    RendezvousConnectionError,
    RendezvousStateError,
    map_exceptions,
)

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.client import PubSub

__all__ = (
    "DEFAULT_KEY_PREFIX",
    "DEFAULT_TIMEOUT",
    "MAX_STATE_SIZE_LIMIT",
    "SET_STATE_SCRIPT",
    "RedisBackend",
    "RedisToken",
    "from_url",
)

DEFAULT_KEY_PREFIX = "arendezvous:"
"""Prefix of every run's key (and change channel) unless the backend is given another."""

DEFAULT_TIMEOUT = 5.0
"""Seconds a call may take, and an outage ``wait_for_change`` rides out, before they fail."""

MAX_STATE_SIZE_LIMIT = 512 * 1024 * 1024
"""Redis refuses strings and arguments over ``proto-max-bulk-len`` (512 MiB by default)."""

FORMAT = b"arendezvous/1"
"""The ``format`` field of every hash this backend writes; anything else is not ours."""

SET_STATE_SCRIPT = """
-- KEYS[1]: the run's hash, whose name is also the name of its change channel.
-- ARGV[1]: the new state. ARGV[2]: '1' if the caller holds a token, '0' for None.
-- ARGV[3], ARGV[4]: the token's incarnation and counter; with no token, ARGV[3] is a fresh
-- incarnation for the hash this call may create. ARGV[5]: this call's writer id.
-- Reply: {1, incarnation, counter} written; {0, incarnation, counter, state} not written;
-- {0} no state exists; {-1, reason} the key holds something that is not ours.
local key = KEYS[1]
local kind = redis.call('TYPE', key)['ok']
if kind == 'none' then
  if ARGV[2] == '1' then
    return {0}
  end
  redis.call('HSET', key, 'format', 'arendezvous/1', 'incarnation', ARGV[3], 'counter', '1',
             'state', ARGV[1], 'writer', ARGV[5])
  redis.call('PUBLISH', key, ARGV[3] .. ':1')
  return {1, ARGV[3], 1}
end
if kind ~= 'hash' then
  return {-1, 'the key holds a ' .. kind .. ', not a hash'}
end
local f = redis.call('HMGET', key, 'format', 'incarnation', 'counter', 'state', 'writer')
if f[1] ~= 'arendezvous/1' then
  return {-1, 'the hash has no arendezvous/1 format field'}
end
if not (f[2] and f[3] and f[4]) or #f[2] ~= 32 or not string.match(f[2], '^[0-9a-f]+$')
    or #f[3] > 18 or not string.match(f[3], '^[1-9][0-9]*$') then
  return {-1, 'the hash has a missing or malformed field'}
end
if ARGV[2] == '1' and f[2] == ARGV[3] and f[3] == ARGV[4] then
  local counter = redis.call('HINCRBY', key, 'counter', 1)
  redis.call('HSET', key, 'state', ARGV[1], 'writer', ARGV[5])
  redis.call('PUBLISH', key, f[2] .. ':' .. counter)
  return {1, f[2], counter}
end
if f[5] == ARGV[5] then
  -- This very call wrote already: a client retried it after losing the reply.
  return {1, f[2], f[3]}
end
return {0, f[2], f[3], f[4]}
"""
"""The compare-and-swap, as run by ``EVALSHA`` (``EVAL`` when the server lacks it: NOSCRIPT)."""

_SET_STATE_SHA = hashlib.sha1(SET_STATE_SCRIPT.encode()).hexdigest()
_INCARNATION = re.compile(rb"[0-9a-f]{32}")
_COUNTER = re.compile(rb"[1-9][0-9]{0,17}")
_NO_INCARNATION = b""  # never stored (incarnations are 32 hex digits), so it matches nothing

# Reconnect backoff of wait_for_change while the server is unreachable: quick for a restart,
# bounded so an outage costs a few attempts per second, not a busy loop.
_FIRST_RETRY_DELAY = 0.02
_MAX_RETRY_DELAY = 0.5
_SSL_CERT_REQS = ("none", "optional", "required")


@dataclass(frozen=True, slots=True)
class RedisToken:
    """A Redis backend's token: the hash's incarnation and its write counter.

    Tokens are values: two reads of the same write give equal tokens. A token equals only a
    ``RedisToken`` (never a ``str``, ``int`` or tuple), and one from another run, another
    incarnation of the run or another server never matches, short of a 128-bit collision.
    """

    incarnation: str
    counter: int


_INCARNATION_TEXT = re.compile(r"[0-9a-f]{32}")


def _is_token(token: object) -> bool:
    # The caller's token is untrusted: check exact types before anything compares it, so no
    # foreign __eq__ runs; fields no stored token can have (a lone surrogate, an int of
    # thousands of digits) make it merely stale instead of failing to encode.
    return (
        type(token) is RedisToken
        and type(token.incarnation) is str
        and type(token.counter) is int
        and 0 < token.counter < 10**18
        and _INCARNATION_TEXT.fullmatch(token.incarnation) is not None
    )


def _same_token(current: RedisToken, token: object) -> bool:
    return _is_token(token) and token == current


def _decode_token(incarnation: object, counter: object) -> RedisToken:
    if (
        isinstance(incarnation, bytes)
        and _INCARNATION.fullmatch(incarnation)
        and isinstance(counter, bytes)
        and _COUNTER.fullmatch(counter)
    ):
        return RedisToken(incarnation.decode("ascii"), int(counter))
    raise RendezvousStateError("the stored incarnation or counter is malformed")


def _command(client: Redis) -> Callable[..., Awaitable[Any]]:
    """``client.execute_command``, typed: redis-py leaves it unannotated."""
    execute: Callable[..., Awaitable[Any]] = client.execute_command
    return execute


def _redis_modules() -> Any:
    """Import redis-py's asyncio client, or raise the ImportError naming the extra."""
    return import_optional("redis.asyncio", "redis")


class RedisBackend(RunHandle, AsyncRendezvousBackend):
    """A handle on one run's state in Redis (or Valkey), in the hash ``<key_prefix><run_id>``.

    Connect either with connection parameters (``host``, ``port``, ``db``, ``username``,
    ``password``, ``ssl`` and the ``ssl_*`` files), from which the backend builds and owns its
    client, or with an existing ``redis.asyncio.Redis`` *client*, which the caller owns: it is
    not closed by :meth:`aclose`, it must not decode responses, and its own timeouts and retry
    policy apply beneath this backend's *timeout*.

    :param key_prefix: prepended to *run_id* to form the key; the change channel has the same
        name as the key.
    :param timeout: how long the store may take to answer before a call raises
        ``RendezvousConnectionError``: a client built here applies it to every connect, send
        and reply (its socket timeouts); a caller's client gets it as a deadline on each call.
        ``wait_for_change`` rides out an outage this long, reconnecting, before it raises, and
        checks a silent subscription with a PING this often.
    :param max_state_size: the largest state accepted, in bytes; at most
        :data:`MAX_STATE_SIZE_LIMIT` (Redis's own limit on a string).

    Runs only on asyncio. Share a handle freely between tasks of one event loop. A handle that
    owns its client opens new connections when it is used from another event loop (those of the
    old loop can no longer be closed through it and are left to the garbage collector); one
    handle per event loop avoids that.

    Cancellation: a cancelled ``set_state`` either ran its script entirely or not at all (Redis
    runs scripts atomically); the connection it was using is closed rather than returned to the
    pool with a reply pending, so later calls never read a stale reply.

    Credentials never appear in ``repr()`` or in error messages.
    """

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
        ssl: bool = False,
        ssl_ca_certs: str | None = None,
        ssl_certfile: str | None = None,
        ssl_keyfile: str | None = None,
        ssl_cert_reqs: str | None = None,
        ssl_check_hostname: bool | None = None,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        timeout: float = DEFAULT_TIMEOUT,
        max_state_size: int = DEFAULT_MAX_STATE_SIZE,
    ) -> None:
        self._run_id = check_run_id(run_id)
        if not isinstance(key_prefix, str):
            raise TypeError(f"key_prefix must be str, not {type(key_prefix).__name__}")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
            raise TypeError(f"timeout must be a number, not {type(timeout).__name__}")
        if not 0 < timeout < math.inf:
            raise ValueError("timeout must be a positive, finite number of seconds")
        if isinstance(max_state_size, bool) or not isinstance(max_state_size, int):
            raise TypeError(f"max_state_size must be int, not {type(max_state_size).__name__}")
        if not 0 < max_state_size <= MAX_STATE_SIZE_LIMIT:
            raise ValueError(
                f"max_state_size must be between 1 and {MAX_STATE_SIZE_LIMIT} bytes "
                "(Redis's proto-max-bulk-len)"
            )
        if ssl_cert_reqs is not None and ssl_cert_reqs not in _SSL_CERT_REQS:
            raise ValueError(f"ssl_cert_reqs must be one of {', '.join(_SSL_CERT_REQS)}")
        redis_asyncio = _redis_modules()
        from redis import exceptions

        self._errors = exceptions
        self._key_prefix = key_prefix
        self._key = (key_prefix + run_id).encode("utf-8", "surrogatepass")
        self._timeout = float(timeout)
        self._max_state_size = max_state_size
        self._closed = False
        # Unique per handle, process and call, so a retried script recognises its own earlier
        # write and nothing else's (a forked child draws a new prefix: see set_state).
        self._writer_prefix = os.urandom(8).hex()
        self._writer_pid = os.getpid()
        self._writes = itertools.count()

        tls_options = {
            "ssl_ca_certs": ssl_ca_certs,
            "ssl_certfile": ssl_certfile,
            "ssl_keyfile": ssl_keyfile,
            "ssl_cert_reqs": ssl_cert_reqs,
            "ssl_check_hostname": ssl_check_hostname,
        }
        connection = {"host": host, "port": port, "db": db, "username": username}
        if client is not None:
            if (
                password is not None
                or ssl
                or any(value is not None for value in (*connection.values(), *tls_options.values()))
            ):
                raise ValueError("pass either client or connection parameters, not both")
            if not isinstance(client, redis_asyncio.Redis):
                raise TypeError(
                    f"client must be a redis.asyncio.Redis, not {type(client).__name__}"
                )
            if client.get_encoder().decode_responses:
                raise ValueError("the client must not decode responses (decode_responses=False)")
            self._owns_client = False
            self._where = "a caller's redis.asyncio client"
            self._client_kwargs: dict[str, Any] = {}
        else:
            if not ssl and any(value is not None for value in tls_options.values()):
                raise ValueError("ssl_* options need ssl=True (a rediss:// URL)")
            if db is not None and (isinstance(db, bool) or not isinstance(db, int) or db < 0):
                raise ValueError("db must be a non-negative int")
            host = host or "localhost"
            port = 6379 if port is None else port
            db = db or 0
            self._owns_client = True
            shown_host = f"[{host}]" if ":" in host else host
            self._where = f"{'rediss' if ssl else 'redis'}://{shown_host}:{port}/{db}"
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
            if ssl:
                self._client_kwargs["ssl"] = True
                self._client_kwargs.update(
                    {name: value for name, value in tls_options.items() if value is not None}
                )
        self._client: Redis | None = client
        self._deadline = None if self._owns_client else self._timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._what_get = f"get_state of run {run_id!r} on {self._where}"
        self._what_set = f"set_state of run {run_id!r} on {self._where}"
        self._what_wait = f"wait_for_change of run {run_id!r} on {self._where}"

    @property
    def name(self) -> str:
        return "redis"

    @property
    def key(self) -> bytes:
        """The Redis key of the run's hash (also the name of its change channel)."""
        return self._key

    @property
    def timeout(self) -> float:
        """Seconds a call may take before it raises ``RendezvousConnectionError``."""
        return self._timeout

    def __repr__(self) -> str:
        return f"RedisBackend({self._where!r}, run_id={self._run_id!r}, key={self._key!r})"

    def _ready(self) -> Redis:
        """The client to use now: checks the handle is open and the loop is asyncio."""
        self._check_open()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            require_asyncio("redis", "redis.asyncio")
            raise
        client = self._client
        if self._owns_client and (client is None or self._loop is not loop):
            # Connections belong to the loop that opened them: a new loop needs new ones.
            client = self._client = _redis_modules().Redis(**self._client_kwargs)
            self._loop = loop
        assert client is not None
        return client

    async def _execute(self, client: Redis, *args: object) -> Any:
        """Run one command within the timeout.

        A client built here enforces it on every socket step itself (measured: an anyio deadline
        per call costs about a tenth of a local round trip); a caller's client, whose timeouts
        are unknown, gets an explicit deadline.
        """
        if self._deadline is None:
            return await _command(client)(*args)
        with anyio.fail_after(self._deadline):
            return await _command(client)(*args)

    def _reraise(self, exc: Exception, what: str) -> NoReturn:
        """Raise a failed command's *exc* as ours (state or connection error), else unchanged."""
        errors = self._errors
        if isinstance(exc, TimeoutError):  # our own deadline, not a socket timeout
            raise RendezvousConnectionError(f"{what}: no reply within {self._timeout:g} s") from exc
        if isinstance(exc, errors.ResponseError) and str(exc).startswith("WRONGTYPE"):
            raise RendezvousStateError(
                f"{what}: the key {self._key!r} holds something that is not an arendezvous "
                "state (WRONGTYPE)"
            ) from exc
        with map_exceptions(connection=(errors.RedisError, OSError), what=what):
            raise exc
        raise exc  # not reached: map_exceptions re-raises whatever it does not map

    @contextmanager
    def _calling(self, what: str, *, deadline: bool = True) -> Iterator[None]:
        """Map errors like :meth:`_reraise`; bound the block by the timeout if *deadline*."""
        try:
            with anyio.fail_after(self._timeout if deadline else None):
                yield
        except Exception as exc:
            self._reraise(exc, what)

    # -- the contract ----------------------------------------------------------------------------

    async def get_state(self) -> tuple[bytes, Token] | None:
        client = self._ready()
        return await self._read(client)

    async def _read(self, client: Redis) -> tuple[bytes, RedisToken] | None:
        try:
            fields = await self._execute(client, "HGETALL", self._key)
        except Exception as exc:
            self._reraise(exc, self._what_get)
        if not fields:
            return None
        state = fields.get(b"state")
        if fields.get(b"format") != FORMAT or state is None:
            raise RendezvousStateError(
                f"{self._what_get}: the hash {self._key!r} is not an arendezvous/1 state"
            )
        return state, _decode_token(fields.get(b"incarnation"), fields.get(b"counter"))

    async def set_state(
        self, state: bytes, token: Token | None = None
    ) -> tuple[bytes, Token, bool]:
        client = self._ready()
        state = check_state(state, self._max_state_size)
        incarnation: str | bytes
        if token is None:
            has_token, incarnation, counter = b"0", os.urandom(16).hex(), 0
        elif _is_token(token):
            assert isinstance(token, RedisToken)
            has_token, incarnation, counter = b"1", token.incarnation, token.counter
        else:
            has_token, incarnation, counter = b"1", _NO_INCARNATION, 0
        if os.getpid() != self._writer_pid:
            # A forked child would repeat its parent's writer ids, and a stale write of the child
            # could then pass for the parent's successful one.
            self._writer_prefix, self._writer_pid = os.urandom(8).hex(), os.getpid()
        writer = f"{self._writer_prefix}-{next(self._writes)}"
        arguments = (1, self._key, state, has_token, incarnation, counter, writer)
        try:
            try:
                reply = await self._execute(client, "EVALSHA", _SET_STATE_SHA, *arguments)
            except self._errors.NoScriptError:
                # A restarted or flushed server forgot the script; EVAL runs and caches it.
                reply = await self._execute(client, "EVAL", SET_STATE_SCRIPT, *arguments)
        except Exception as exc:
            self._reraise(exc, self._what_set)
        status = reply[0]
        if status == 1:
            return state, RedisToken(reply[1].decode("ascii"), int(reply[2])), True
        if status == 0:
            if len(reply) == 1:
                return b"", None, False
            return reply[3], _decode_token(reply[1], reply[2]), False
        reason = reply[1].decode("utf-8", "replace") if len(reply) > 1 else "unknown"
        raise RendezvousStateError(f"{self._what_set}: {reason} (key {self._key!r})")

    async def wait_for_change(
        self, token: Token | None, *, timeout: float | None = None
    ) -> tuple[bytes, Token] | None:
        check_timeout(timeout)
        client = self._ready()
        outage = _Outage()
        # A first read outside the wait's deadline, so that timeout=0 still reports a change
        # that already happened.
        try:
            current = await self._read(client)
        except BackendClosedError:
            raise
        except RendezvousConnectionError as exc:
            outage.failed(exc)
        else:
            if current is not None and not _same_token(current[1], token):
                return current
        with anyio.move_on_after(timeout):
            return await self._watch(client, token, outage)
        if outage.error is not None:
            # "No change" would be a guess: the store could not be asked.
            raise RendezvousConnectionError(
                f"{self._what_wait}: the store was unreachable when the wait timed out"
            ) from outage.error
        return None

    async def _watch(
        self, client: Redis, token: Token | None, outage: _Outage
    ) -> tuple[bytes, RedisToken]:
        """Subscribe, re-read, and re-read again on every notice, reconnecting as needed."""
        delay = _FIRST_RETRY_DELAY
        while True:
            if outage.error is not None:
                self._check_open()
                waited = anyio.current_time() - outage.since
                if waited >= self._timeout:
                    raise RendezvousConnectionError(
                        f"{self._what_wait}: the store was unreachable for {waited:.3g} s"
                    ) from outage.error
                # A reconnect backoff, not a poll of the state: an unreachable server has
                # nothing to tell, and the re-read after reconnecting catches up.
                await anyio.sleep(min(delay, self._timeout - waited))
                delay = min(delay * 2, _MAX_RETRY_DELAY)
                client = self._ready()
            feed = _ChangeFeed(self, client)
            try:
                await feed.open()
                current = await self._read(client)
                outage.clear()
                delay = _FIRST_RETRY_DELAY
                while current is None or _same_token(current[1], token):
                    await feed.next_hint()
                    current = await self._read(client)
                return current
            except BackendClosedError:
                raise
            except RendezvousConnectionError as exc:
                outage.failed(exc)
            finally:
                await feed.aclose()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        client, self._client = self._client, None
        if client is None or not self._owns_client:
            return
        try:
            same_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            same_loop = False
        if same_loop:
            # Closing must finish even if the caller is being cancelled, or sockets leak.
            with anyio.CancelScope(shield=True), suppress(self._errors.RedisError, OSError):
                await client.aclose()


class _Outage:
    """When the store first failed to answer in the current run of failures, and how."""

    __slots__ = ("error", "since")

    def __init__(self) -> None:
        self.error: RendezvousConnectionError | None = None
        self.since = 0.0

    def failed(self, error: RendezvousConnectionError) -> None:
        if self.error is None:
            self.since = anyio.current_time()
        self.error = error

    def clear(self) -> None:
        self.error = None


class _ChangeFeed:
    """One pub/sub subscription to a run's change channel, used by one ``wait_for_change``.

    Each wait has its own subscriber connection (taken from the client's pool and closed after):
    a subscribed connection can run no other command, and waits are rare next to reads.
    """

    def __init__(self, backend: RedisBackend, client: Redis) -> None:
        self._backend = backend
        self._pubsub: PubSub = client.pubsub()
        self._reconnected = False

    async def open(self) -> None:
        """Subscribe and wait for the server's confirmation, so later writes are all seen."""
        backend = self._backend
        with backend._calling(backend._what_wait):
            await self._pubsub.subscribe(backend._key)
            while True:
                message = await self._pubsub.get_message(timeout=None)
                if message is not None and message["type"] == "subscribe":
                    break
        connection = self._pubsub.connection
        if connection is not None:
            # A client with a retry policy reconnects (and resubscribes) inside get_message;
            # notices sent meanwhile are lost, so the next hint must trigger a re-read.
            connection.register_connect_callback(self._on_connect)

    def _on_connect(self, connection: object) -> None:
        self._reconnected = True

    async def next_hint(self) -> None:
        """Return when the state may have changed: a notice, or a reconnect that may hide one.

        A silent connection is checked with a PING every ``timeout`` seconds; no answer to it
        within another ``timeout`` counts as a lost connection.
        """
        backend = self._backend
        awaiting_pong = False
        while True:
            with backend._calling(backend._what_wait, deadline=False):
                message = await self._pubsub.get_message(timeout=backend._timeout)
            if self._reconnected:
                self._reconnected = False
                return
            if message is None:
                if awaiting_pong:
                    raise RendezvousConnectionError(
                        f"{backend._what_wait}: no answer to PING within {backend._timeout:g} s"
                    )
                with backend._calling(backend._what_wait):
                    await self._pubsub.ping()
                awaiting_pong = True
            elif message["type"] == "message":
                return
            elif message["type"] == "pong":
                awaiting_pong = False

    async def aclose(self) -> None:
        connection = self._pubsub.connection
        if connection is not None:
            connection.deregister_connect_callback(self._on_connect)
        # Shielded: a cancelled wait must still hand its connection back, closed.
        with (
            anyio.CancelScope(shield=True),
            suppress(self._backend._errors.RedisError, OSError, RuntimeError),
        ):
            close: Callable[[], Awaitable[None]] = self._pubsub.aclose
            await close()


def from_url(url: str, *, run_id: str) -> RedisBackend:
    """Open ``redis://[[username]:password@]host[:port][/db][?options]`` (``rediss://``: TLS).

    The host defaults to ``localhost``, the port to 6379 and the database to 0; username and
    password are percent-decoded. Options, as query parameters:

    * ``timeout`` -- seconds a call may take (default 5); also the connect and socket timeout.
    * ``key_prefix`` -- prefix of the run's key (default ``arendezvous:``).
    * ``max_state_size`` -- the largest state accepted, in bytes (default 1 MiB).
    * ``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile`` -- PEM files: the CAs to trust, and a
      client certificate and its key (``rediss://`` only).
    * ``ssl_cert_reqs`` -- ``required`` (default), ``optional`` or ``none`` (``rediss://`` only).
    * ``ssl_check_hostname`` -- check the server's name against its certificate (default true;
      ``rediss://`` only).

    :raises ValueError: the URL is malformed or an option is unknown or invalid (the message
        never repeats the password).
    """
    from ._url import parse_bool, parse_options, parse_seconds

    parsed = urllib.parse.urlsplit(url)
    scheme = parsed.scheme.lower()
    if scheme not in ("redis", "rediss"):
        raise ValueError(f"expected a redis:// or rediss:// URL, got {scheme}://")
    if parsed.fragment:
        raise ValueError("redis URLs take no #fragment")
    try:
        port = parsed.port
    except ValueError:
        raise ValueError("the port of a redis URL must be a number from 0 to 65535") from None
    if parsed.netloc.rpartition("@")[2] and not parsed.hostname:
        raise ValueError("the host of a redis URL is empty")
    path = parsed.path.strip("/")
    if path and not (path.isascii() and path.isdigit()):
        raise ValueError("the path of a redis URL is the database number, e.g. redis://host/0")
    options = parse_options(
        parsed,
        {
            "timeout": parse_seconds,
            "key_prefix": str,
            "max_state_size": int,
            "ssl_ca_certs": str,
            "ssl_certfile": str,
            "ssl_keyfile": str,
            "ssl_cert_reqs": _parse_cert_reqs,
            "ssl_check_hostname": parse_bool,
        },
    )
    if scheme == "redis" and any(name.startswith("ssl_") for name in options):
        raise ValueError("ssl_* options need a rediss:// URL")
    return RedisBackend(
        run_id,
        host=parsed.hostname or None,
        port=port,
        db=int(path) if path else None,
        username=urllib.parse.unquote(parsed.username) if parsed.username else None,
        password=urllib.parse.unquote(parsed.password) if parsed.password else None,
        ssl=scheme == "rediss",
        **options,
    )


def _parse_cert_reqs(value: str) -> str:
    if value not in _SSL_CERT_REQS:
        raise ValueError(f"expected one of {', '.join(_SSL_CERT_REQS)}")
    return value
