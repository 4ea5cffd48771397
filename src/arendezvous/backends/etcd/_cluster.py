"""The etcd backend's connections: one gRPC channel per member, and calls that fail over.

A single gRPC channel over several addresses (``pick_first``) stays on the first member that
accepted the connection: when that member freezes (a long GC pause, a stopped VM) its TCP
connection stays up, the channel stays READY, and every call times out, on every client, for as
long as the member is frozen. So each member gets a channel of its own, and a call tries the
members one after the other within the handle's timeout, the one that last answered first: a
member that does not answer within its share of the time left is left for the next one.

Each attempt is classified by how it failed:

* *refused* -- the connection could not be made, so nothing was sent: the next member is tried
  at once, and when every member refused, the call fails at once (no waiting out the timeout);
* *unanswered or broken* -- the request may have reached etcd: a read moves on to the next
  member; a write does too, but is then *ambiguous*: if the retry wins, the first attempt can never
  apply (its compare no longer holds); if the retry loses, the first may have been applied, and
  the backend says so rather than report a lost race;
* anything else (a bad request, a permission) is final.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from typing import Any, NoReturn

import anyio
import anyio.lowlevel

from ..._errors import ErrorTable, RendezvousConnectionError, translate
from .._urlparse import parse_host_port

__all__ = ("Cluster", "LeaseCalls", "Member", "cancellable", "parse_endpoints")

# gRPC reconnects after 1 s, then backs off up to 2 min by default: far too slow to notice that a
# restarted etcd is back. Keepalive pings find a silently dead connection under a quiet watch;
# etcd refuses pings more often than every 5 s (--grpc-keepalive-min-time).
_RECONNECT_BACKOFF_MS = 100
_MAX_RECONNECT_BACKOFF_MS = 1000
_KEEPALIVE_MS = 10_000
# etcd is electing a leader: nothing was proposed; another round of attempts after this pause.
_LEADERLESS_PAUSE = 0.05
_REFUSED = re.compile(r"failed to connect|connection refused|connect failed", re.IGNORECASE)
_NOT_PROPOSED = re.compile(r"no leader|not capable|too many requests", re.IGNORECASE)


def parse_endpoints(endpoints: str | Sequence[str]) -> tuple[tuple[str, int], ...]:
    """``"host:port,host:port"`` or a sequence of ``host[:port]`` -> ``((host, port), ...)``.

    :raises ValueError: no endpoint, or a malformed one.
    """
    items = endpoints.split(",") if isinstance(endpoints, str) else list(endpoints)
    if not items:
        raise ValueError("no etcd endpoint given")
    return tuple(parse_host_port(item, 2379, "etcd endpoints") for item in items)


def shown_endpoint(host: str, port: int) -> str:
    """``host:port``, an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _target(host: str, port: int) -> str:
    try:
        version = ipaddress.ip_address(host).version
    except ValueError:
        version = None
    return f"ipv6:[{host}]:{port}" if version == 6 else f"{host}:{port}"


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved, so asyncio does not log it as never retrieved


async def cancellable(
    operation: Awaitable[Any],
    *,
    settle_on_cancel: bool = False,
    pending: set[asyncio.Future[Any]] | None = None,
) -> Any:
    """Await a grpc.aio operation so that cancelling the caller cancels it exactly once.

    grpc.aio turns a task's cancellation into its own (it cancels the RPC, then raises a fresh
    ``CancelledError``). anyio's cancel scopes re-deliver a cancellation until the task leaves the
    scope, and the two together leave a stray cancellation pending that escapes ``move_on_after``
    (measured: about one in ten calls cancelled mid-flight). So the operation runs as a task of
    its own: the caller is cancelled at a plain future inside ``asyncio.wait`` and then cancels
    the operation explicitly.

    With *settle_on_cancel* (writes) a cancelled caller first waits, shielded, for the operation's
    outcome (bounded by its gRPC deadline): a request already on the wire would otherwise be
    applied by etcd *after* the cancelled call returned, and a reader could see the write of a
    call its writer believes abandoned.

    An RPC abandoned this way is cancelled through gRPC, and its task, which ends once gRPC has
    reported the cancellation, is added to *pending*: gRPC reports the end of a call to the event
    loop it began on, so whoever closes the channels waits for those tasks while the loop still
    runs (a report to a closed loop fails in whichever loop runs next).
    """
    task = asyncio.ensure_future(operation)
    try:
        await asyncio.wait((task,))
    except BaseException:
        if settle_on_cancel:
            with anyio.CancelScope(shield=True):
                try:
                    await asyncio.wait((task,))
                except BaseException:  # cancelled by asyncio itself, past anyio's shield
                    task.cancel()
        else:
            cancel_rpc = getattr(operation, "cancel", None)
            if cancel_rpc is not None:
                cancel_rpc()  # the task ends with gRPC's own report of the cancellation
            else:
                task.cancel()
        if pending is not None and not task.done():
            pending.add(task)
            task.add_done_callback(pending.discard)
        task.add_done_callback(_retrieve)
        raise
    if task.cancelled():
        # grpc.aio cancelled the call itself (the channel was closed): an error, not our
        # caller's cancellation, which must not leak out as a stray CancelledError.
        raise RendezvousConnectionError("the etcd call was cancelled: its channel was closed")
    return task.result()


class _FirstAnswer:
    """The first response of a streaming call, awaited like a unary call's (``cancel()``
    cancels the stream, as :func:`cancellable` expects of a call)."""

    def __init__(self, grpc: Any, call: Any) -> None:
        self._grpc = grpc
        self._call = call

    def __await__(self) -> Any:
        return self._first().__await__()

    async def _first(self) -> Any:
        response = await self._call.read()
        if response is self._grpc.aio.EOF:
            raise RendezvousConnectionError("the stream ended without an answer")
        return response

    def cancel(self) -> bool:
        cancelled: bool = self._call.cancel()
        return cancelled


class LeaseCalls:
    """A member's ``Lease`` service as :meth:`Cluster.call` calls it: one request, one answer.

    ``LeaseKeepAlive`` is a stream, meant to be held open by a process that keeps a lease alive
    while it lives; a run's lease is kept alive by the run's writes instead (see
    :mod:`._backend`), so each keep-alive is a stream of one request, whose first answer is the
    call's, and which etcd ends once the request side is closed.
    """

    __slots__ = ("_grpc", "_stub")

    def __init__(self, grpc: Any, stub: Any) -> None:
        self._grpc = grpc
        self._stub = stub

    def LeaseGrant(self, request: Any, **options: Any) -> Any:
        """``Lease.LeaseGrant``, unary already."""
        return self._stub.LeaseGrant(request, **options)

    def LeaseKeepAlive(self, request: Any, **options: Any) -> _FirstAnswer:
        """``Lease.LeaseKeepAlive`` with the one *request*: its answer."""
        return _FirstAnswer(self._grpc, self._stub.LeaseKeepAlive(iter((request,)), **options))


class Member:
    """One etcd member: its address, and its channel and stubs once used."""

    __slots__ = (
        "auth", "auth_lock", "channel", "kv", "lease", "metadata", "shown", "target", "watch",
    )

    def __init__(self, host: str, port: int) -> None:
        self.shown = shown_endpoint(host, port)
        self.target = _target(host, port)
        self.channel: Any = None
        self.kv: Any = None
        self.watch: Any = None
        self.lease: LeaseCalls | None = None
        self.auth: Any = None
        self.auth_lock = asyncio.Lock()
        #: The auth token's call metadata, once authenticated (per member: simple tokens are).
        self.metadata: tuple[tuple[str, str], ...] | None = None


class Cluster:
    """A handle's connections to the members of one etcd cluster, on one event loop.

    :param endpoints: the members' addresses, in the order given (the first is tried first).
    :param credentials: gRPC channel credentials for TLS, or ``None``.
    :param max_message: the largest message received, in bytes.
    :param what: makes the start of an error message from the operation's name.
    """

    def __init__(
        self,
        grpc: Any,
        rpc: Any,
        endpoints: Sequence[tuple[str, int]],
        *,
        credentials: Any,
        timeout: float,
        max_message: int,
        username: str | None,
        password: str | None,
        errors: ErrorTable,
        what: Callable[[str], str],
    ) -> None:
        self.grpc, self.rpc = grpc, rpc
        self.members = [Member(host, port) for host, port in endpoints]
        self.preferred = self.members[0]
        self.timeout = timeout
        self.errors = errors
        self.what = what
        #: RPCs abandoned by cancelled callers, until gRPC has reported their end.
        self.pending: set[asyncio.Future[Any]] = set()
        self._credentials = credentials
        self._username, self._password = username, password
        self._options = [
            # gRPC shares connections between channels with the same target and options, and
            # with them their reconnect backoff: a channel opened to replace a broken one would
            # wait out the old one's backoff. Each channel gets connections of its own.
            ("grpc.use_local_subchannel_pool", 1),
            ("grpc.initial_reconnect_backoff_ms", _RECONNECT_BACKOFF_MS),
            ("grpc.min_reconnect_backoff_ms", _RECONNECT_BACKOFF_MS),
            ("grpc.max_reconnect_backoff_ms", _MAX_RECONNECT_BACKOFF_MS),
            ("grpc.keepalive_time_ms", _KEEPALIVE_MS),
            ("grpc.keepalive_timeout_ms", max(1000, int(timeout * 1000))),
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.max_receive_message_length", max_message),
        ]

    def candidates(self) -> list[Member]:
        """The members in the order to try them: the one that last answered, then the rest."""
        return [self.preferred, *(m for m in self.members if m is not self.preferred)]

    def open(self, member: Member) -> Member:
        """*member* with a channel (opened now if it has none; no I/O happens here)."""
        if member.channel is None:
            grpc, rpc = self.grpc, self.rpc
            if self._credentials is not None:
                channel = grpc.aio.secure_channel(
                    member.target, self._credentials, options=self._options
                )
            else:
                channel = grpc.aio.insecure_channel(member.target, options=self._options)
            member.channel = channel
            member.kv, member.watch = rpc.KVStub(channel), rpc.WatchStub(channel)
            member.auth = rpc.AuthStub(channel)
            member.lease = LeaseCalls(grpc, rpc.LeaseStub(channel))
            member.metadata = None
        return member

    def forget_if_broken(self, member: Member) -> None:
        """After a failure on *member*, let its next call open a fresh channel unless this one is
        connected: gRPC waits up to a second between attempts to reconnect a channel, a new one
        connects at once. Calls still running on the old channel keep it alive until they end."""
        channel = member.channel
        if channel is not None and channel.get_state() != self.grpc.ChannelConnectivity.READY:
            member.channel = None

    async def metadata(self, member: Member, budget: float) -> Any:
        """The auth token's call metadata for *member* (authenticating first), or ``None``."""
        if self._username is None:
            return None
        if member.metadata is None:
            async with member.auth_lock:
                if member.metadata is None:
                    request = self.rpc.AuthenticateRequest(
                        name=self._username, password=self._password
                    )
                    response = await cancellable(
                        member.auth.Authenticate(request, timeout=budget, wait_for_ready=False),
                        pending=self.pending,
                    )
                    member.metadata = (("token", response.token),)
        return member.metadata

    def expired_token(self, exc: BaseException) -> bool:
        """Whether *exc* says the member forgot or expired its auth token (nothing was done)."""
        grpc = self.grpc
        return (
            self._username is not None
            and isinstance(exc, grpc.aio.AioRpcError)
            and exc.code() == grpc.StatusCode.UNAUTHENTICATED
            and "auth token" in (exc.details() or "")
        )

    def _kind(self, exc: BaseException) -> str:
        """``refused``, ``leaderless`` (not applied), ``ambiguous`` or ``final``."""
        grpc = self.grpc
        if isinstance(exc, (OSError, RendezvousConnectionError)):
            return "ambiguous"
        if not isinstance(exc, grpc.aio.AioRpcError):
            return "final"
        code, details = exc.code(), exc.details() or ""
        if code == grpc.StatusCode.UNAVAILABLE:
            if _REFUSED.search(details):
                return "refused"
            return "leaderless" if _NOT_PROPOSED.search(details) else "ambiguous"
        if code in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED,
                    grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL):  # fmt: skip
            return "ambiguous"
        return "final"

    async def call(
        self, method: str, request: Any, *, idempotent: bool, operation: str, service: str = "kv"
    ) -> tuple[Any, bool]:
        """Call ``KV.<method>`` (or ``Lease.<method>``, with *service* ``"lease"``: see
        :class:`LeaseCalls`), trying the members in turn within one deadline.

        Returns ``(response, ambiguous)``: *ambiguous* is true when an earlier attempt of this
        (non-idempotent) call failed in a way that may have applied it.

        :raises RendezvousConnectionError: no member answered in time, or the call failed.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        ambiguous = False
        last: BaseException | None = None
        refreshed: set[int] = set()
        while True:
            members = self.candidates()
            refused_only = True
            index = 0
            while index < len(members):
                member = self.open(members[index])
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                # The member's share of the time left: one that does not answer in its share
                # is left for the next (the last gets all of it).
                budget = remaining / (len(members) - index)
                try:
                    metadata = await self.metadata(member, budget)
                    if not idempotent:
                        # A call cancelled before it starts sends nothing at all.
                        await anyio.lowlevel.checkpoint_if_cancelled()
                    response = await cancellable(
                        getattr(getattr(member, service), method)(
                            request, timeout=budget, metadata=metadata, wait_for_ready=False
                        ),
                        settle_on_cancel=not idempotent,
                        pending=self.pending,
                    )
                except (self.grpc.RpcError, OSError, RendezvousConnectionError) as exc:
                    last = exc
                    if self.expired_token(exc) and id(member) not in refreshed:
                        refreshed.add(id(member))  # refused unapplied: safe to send again
                        member.metadata = None
                        continue
                    kind = self._kind(exc)
                    self.forget_if_broken(member)
                    if kind == "final":
                        self._raise(exc, operation)
                    refused_only = refused_only and kind == "refused"
                    ambiguous = ambiguous or (kind == "ambiguous" and not idempotent)
                    index += 1
                    continue
                self.preferred = member
                return response, ambiguous
            if refused_only or loop.time() >= deadline:
                break
            # Some member answered, unhelpfully (electing a leader), or broke mid-call: another
            # round while time is left.
            await anyio.sleep(min(_LEADERLESS_PAUSE, max(0.0, deadline - loop.time())))
        assert last is not None
        self._raise(last, operation)

    def _raise(self, exc: BaseException, operation: str) -> NoReturn:
        raise self.error(exc, operation) from exc

    def error(self, exc: BaseException, operation: str) -> RendezvousConnectionError:
        """Our error for the client's *exc* during *operation*."""
        error = translate(self.errors, exc, self.what(operation), timeout=self.timeout)
        if isinstance(error, RendezvousConnectionError):
            return error
        return RendezvousConnectionError(f"{self.what(operation)}: {type(exc).__name__}: {exc}")

    async def aclose(self) -> None:
        """Wait (bounded) for abandoned RPCs to be reported, then close every member's channel."""
        if self.pending:
            with anyio.move_on_after(self.timeout):
                await asyncio.wait(set(self.pending))
        for member in self.members:
            channel, member.channel = member.channel, None
            if channel is not None:
                with suppress(Exception):
                    await channel.close()
