"""The torchrun plugin: ``torchrun --rdzv-backend=arendezvous --rdzv-endpoint=URL``.

torch (2.4 and later) loads rendezvous handlers from the ``torchrun.handlers`` entry-point group
when ``torch.distributed.elastic.rendezvous`` is imported: each entry point is a no-argument
callable returning a handler creator, ``creator(RendezvousParameters) -> RendezvousHandler``,
registered under the entry point's name. ``arendezvous.integrations.torch.torchrun_handler`` is
that callable; it returns :func:`create_handler`.

A round of the rendezvous is decided by a membership *engine* (see :data:`ENGINES`); the handler
then gives torch's agents the c10d store they need. Each round, rank 0 starts a ``TCPStore``
bound to its own address and publishes the address through a :class:`BackendStore` kept in the
same backend as the rendezvous, so no node has to guess that it is "the host" (torch's c10d
backend does), and the agents' and workers' store traffic (``MASTER_ADDR``/``MASTER_PORT``) goes
to that ``TCPStore``, not to the rendezvous store.
"""

from __future__ import annotations

import importlib
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol

import torch.distributed as dist
from torch._C._distributed_c10d import PrefixStore, Store, TCPStore
from torch.distributed.elastic.rendezvous import api as torch_api
from torch.distributed.elastic.rendezvous.dynamic_rendezvous import (
    DynamicRendezvousHandler,
    RendezvousTimeout,
)

from .._backend import AsyncRendezvousBackend
from .._closing import ClosesOnExit
from ..backends._url import open_backend
from ..backends._urlparse import parse_positive_int, parse_seconds
from ..sync import SyncBackend
from ._torch_backend import TorchRendezvousBackend, torch_errors
from ._torch_store import BackendStore

if TYPE_CHECKING:
    from ..rendezvous import SyncRendezvous

__all__ = (
    "DEFAULT_SCHEME",
    "ENGINES",
    "HANDLER_NAME",
    "ArendezvousHandler",
    "HandlerConfig",
    "create_handler",
    "default_engine",
    "endpoint_url",
    "register",
)

log = logging.getLogger(__name__)

HANDLER_NAME = "arendezvous"
"""The name the handler is registered under: ``--rdzv-backend=arendezvous``."""

DEFAULT_SCHEME = "redis"
"""The scheme of a ``host:port`` endpoint, unless ``--rdzv-conf scheme=...`` names another."""

_AGENT_STORE_PREFIX = "arendezvous.agent"
_DISABLE_SHARED_STORE_ENV = "TORCH_DISABLE_SHARE_RDZV_TCP_STORE"


def _seconds(value: Any) -> timedelta:
    return timedelta(seconds=parse_seconds(str(value)))


def _positive_int(value: Any) -> int:
    return parse_positive_int(str(value))


def _ignored(value: Any) -> None:
    return None


# --rdzv-conf keys. torchrun passes "timeout" to every handler; torch's dynamic handler ignores it
# (its join_timeout rules), and so do we, so that switching from --rdzv-backend=c10d is one flag.
_CONF: Mapping[str, Callable[[Any], Any]] = {
    "engine": str,
    "scheme": str,
    "join_timeout": _seconds,
    "last_call_timeout": _seconds,
    "close_timeout": _seconds,
    "heartbeat_timeout": _seconds,
    "keep_alive_interval": _positive_int,
    "keep_alive_max_attempt": _positive_int,
    "read_timeout": _seconds,
    "timeout": _ignored,
}


@dataclass(frozen=True)
class HandlerConfig:
    """Everything a handler is built from, parsed from torch's ``RendezvousParameters``.

    ``url`` is the backend URL (``--rdzv-endpoint``, a ``host:port`` given the ``scheme``
    option's scheme); ``run_id`` is ``--rdzv-id``. Timeouts left ``None`` take the engine's
    defaults (torch's: join 600 s, last call 30 s, close 30 s, heartbeat 5 s).
    """

    name: str
    url: str
    run_id: str
    min_nodes: int
    max_nodes: int
    local_addr: str
    engine: str
    join_timeout: timedelta | None = None
    last_call_timeout: timedelta | None = None
    close_timeout: timedelta | None = None
    heartbeat_timeout: timedelta | None = None
    keep_alive_interval: int = 5
    keep_alive_max_attempt: int = 3
    read_timeout: timedelta = timedelta(seconds=60)

    @classmethod
    def from_parameters(cls, params: torch_api.RendezvousParameters) -> HandlerConfig:
        """Parse torchrun's parameters; ``--rdzv-conf`` keys not listed in the docs are refused.

        :raises ValueError: an unknown ``--rdzv-conf`` key or a bad value, an empty endpoint, or
            an unknown engine.
        """
        options: dict[str, Any] = {}
        for key, value in params.config.items():
            if key not in _CONF:
                raise ValueError(
                    f"unknown --rdzv-conf option {key!r} for the {params.backend} rendezvous; "
                    "accepted: " + ", ".join(sorted(_CONF))
                )
            try:
                options[key] = _CONF[key](value)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"bad value for --rdzv-conf {key}={value!r} ({exc})") from None
        options.pop("timeout", None)
        scheme = options.pop("scheme", DEFAULT_SCHEME)
        engine = options.pop("engine", None) or default_engine()
        if engine not in ENGINES:
            raise ValueError(
                f"unknown rendezvous engine {engine!r}; available: " + ", ".join(sorted(ENGINES))
            )
        return cls(
            name=params.backend,
            url=endpoint_url(params.endpoint, scheme),
            run_id=params.run_id,
            min_nodes=params.min_nodes,
            max_nodes=params.max_nodes,
            local_addr=params.local_addr or socket.getfqdn(),
            engine=engine,
            **options,
        )

    def open_backend(self, suffix: str | None = None) -> AsyncRendezvousBackend:
        """A backend on the run ``<run_id>``, or ``<run_id>.<suffix>``: arendezvous's engine keeps
        its state under the job's id itself, torch's engine and the c10d store beside it."""
        run_id = self.run_id if suffix is None else f"{self.run_id}.{suffix}"
        return open_backend(self.url, run_id=run_id)


def endpoint_url(endpoint: str, scheme: str = DEFAULT_SCHEME) -> str:
    """The backend URL for ``--rdzv-endpoint``: a URL as given, or ``host:port`` under *scheme*.

    :raises ValueError: the endpoint is empty.
    """
    endpoint = endpoint.strip()
    if not endpoint:
        raise ValueError(
            "the arendezvous rendezvous needs --rdzv-endpoint: a backend URL such as "
            "redis://HOST:6379/0, etcd://HOST:2379 or file:///shared/dir, or HOST:PORT "
            f"(read as {scheme}://HOST:PORT; choose with --rdzv-conf scheme=...)"
        )
    if "://" in endpoint:
        return endpoint
    return f"{scheme}://{endpoint}"


# -- membership engines -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Round:
    """One completed round as an engine reports it."""

    rank: int
    world_size: int
    store: Store
    """A c10d store shared by this round's members only (a per-round prefix of the job's store)."""
    bootstrap: torch_api.RendezvousStoreInfo | None
    """Rank 0's TCPStore, when the engine started one itself; else the handler does."""


class _Engine(Protocol):
    """What decides membership: who is in a round, and each node's rank."""

    def next_round(self) -> _Round: ...

    def is_closed(self) -> bool: ...

    def set_closed(self) -> None: ...

    def num_nodes_waiting(self) -> int: ...

    def shutdown(self) -> bool: ...


def _bound_tcp_store(addr: str) -> TCPStore:
    """A TCPStore server listening on *addr* only, on a free port.

    torch's own servers listen on every interface; binding the socket ourselves and handing it over
    (``master_listen_fd``) keeps the store where the node's address says it is.
    """
    family, kind, proto, _, sockaddr = socket.getaddrinfo(addr, 0, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.bind(sockaddr)
        sock.listen()
    except BaseException:
        sock.close()
        raise
    # The store owns the descriptor from here on and closes it when it is destroyed.
    fd = sock.detach()
    return TCPStore(
        addr, 0, is_master=True, multi_tenant=False, wait_for_workers=False, master_listen_fd=fd
    )


class _BoundDynamicRendezvousHandler(DynamicRendezvousHandler):
    """torch's handler, with a fresh rank-0 store published every round, bound to the node.

    torch (2.13) starts rank 0's ``TCPStore`` and publishes its address only in a node's first
    round (or when it first becomes rank 0), and reuses both later. A node that joins in a later
    round then waits for keys nobody writes; a node keeps a former rank 0's address after ranks
    moved; and the workers of a new round read the last round's keys from the reused server
    (torch's worker side assumes "a new TCPStore for every retry"), so gloo dials dead peers.
    Forgetting the cached address before each round makes rank 0 start a new server and every
    node read its address afresh. The server listens on the node's address only (torch's listens
    on every interface).
    """

    def next_rendezvous(self) -> torch_api.RendezvousInfo:
        self._bootstrap_store_info = None
        info: torch_api.RendezvousInfo = super().next_rendezvous()
        return info

    def _create_tcp_store_server(self, master_addr: str, master_port: int) -> TCPStore:
        return _bound_tcp_store(master_addr)

    def shutdown(self) -> bool:
        try:
            return bool(super().shutdown())
        finally:
            # The job is over: let go of rank 0's server (torch's handler keeps it while it lives).
            self._shared_tcp_store_server = None
            self._bootstrap_store_info = None


class _TorchEngine:
    """Membership by torch's ``DynamicRendezvousHandler`` over :class:`TorchRendezvousBackend`.

    torch's semantics exactly (its threads, its polling, its pickled state), in the run
    ``<run_id>.torch``; rank 0's ``TCPStore`` is the one torch's handler starts.
    """

    def __init__(self, config: HandlerConfig, store: BackendStore) -> None:
        self._backend = TorchRendezvousBackend(config.open_backend("torch"), name=config.name)
        self._handler = _BoundDynamicRendezvousHandler.from_backend(
            run_id=config.run_id,
            store=store,
            backend=self._backend,
            min_nodes=config.min_nodes,
            max_nodes=config.max_nodes,
            local_addr=config.local_addr,
            timeout=RendezvousTimeout(
                join=config.join_timeout,
                last_call=config.last_call_timeout,
                close=config.close_timeout,
                heartbeat=config.heartbeat_timeout,
            ),
            keep_alive_interval=config.keep_alive_interval,
            keep_alive_max_attempt=config.keep_alive_max_attempt,
        )

    @property
    def handler(self) -> DynamicRendezvousHandler:
        """The torch handler deciding membership."""
        handler: DynamicRendezvousHandler = self._handler
        return handler

    def next_round(self) -> _Round:
        info = self._handler.next_rendezvous()
        return _Round(info.rank, info.world_size, info.store, info.bootstrap_store_info)

    def is_closed(self) -> bool:
        return bool(self._handler.is_closed())

    def set_closed(self) -> None:
        self._handler.set_closed()

    def num_nodes_waiting(self) -> int:
        return int(self._handler.num_nodes_waiting())

    def shutdown(self) -> bool:
        try:
            return bool(self._handler.shutdown())
        finally:
            self._backend.close()


class _ArendezvousEngine:
    """Membership by arendezvous's own rendezvous (:mod:`arendezvous.rendezvous`) in the run
    ``<run_id>``: no polling, no pickle, rounds formed as soon as the store says so.

    torchrun's options map onto it as onto torch's handler: ``join_timeout``,
    ``last_call_timeout``, ``keep_alive_interval`` (seconds between heartbeats) and
    ``keep_alive_max_attempt`` (missed heartbeats before a node is evicted). Shutting down closes
    the run, as torch's handler does.
    """

    def __init__(self, config: HandlerConfig, store: BackendStore) -> None:
        from ..rendezvous import SyncRendezvous

        def seconds(value: timedelta | None, default: float) -> float:
            return default if value is None else value.total_seconds()

        if config.keep_alive_max_attempt < 2:
            raise ValueError(
                "the arendezvous engine evicts a node after keep_alive_max_attempt missed "
                "heartbeats; it must be at least 2"
            )
        self._run_id = config.run_id
        self._store = store
        self._backend = SyncBackend(config.open_backend())
        # Ranks follow the order of node ids; torch's descriptor (address, pid, a counter) plus a
        # random part keeps ids unique when containers share addresses and pids.
        node = f"{config.local_addr}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        try:
            self._rendezvous = SyncRendezvous(
                self._backend,
                node,
                config.min_nodes,
                config.max_nodes,
                last_call=seconds(config.last_call_timeout, 30.0),
                join_timeout=seconds(config.join_timeout, 600.0),
                heartbeat=float(config.keep_alive_interval),
                heartbeat_timeout=float(config.keep_alive_interval * config.keep_alive_max_attempt),
            )
            # Keeps the node's heartbeat running on the backend's loop thread until shutdown.
            self._rendezvous.__enter__()
        except BaseException:
            self._backend.close()
            raise

    @property
    def rendezvous(self) -> SyncRendezvous:
        """The :class:`~arendezvous.rendezvous.SyncRendezvous` deciding membership."""
        return self._rendezvous

    def next_round(self) -> _Round:
        info = self._rendezvous.next_rendezvous()
        store = PrefixStore(f"torch.rendezvous.{self._run_id}.{info.round_id}", self._store)
        return _Round(info.rank, info.world_size, store, None)

    def is_closed(self) -> bool:
        return bool(self._rendezvous.is_closed())

    def set_closed(self) -> None:
        self._rendezvous.close()

    def num_nodes_waiting(self) -> int:
        return int(self._rendezvous.num_nodes_waiting())

    def shutdown(self) -> bool:
        try:
            self._rendezvous.close()
        finally:
            try:
                self._rendezvous.__exit__(None, None, None)
            finally:
                self._backend.close()
        return True


EngineFactory = Callable[[HandlerConfig, BackendStore], _Engine]

ENGINES: dict[str, EngineFactory] = {"arendezvous": _ArendezvousEngine, "torch": _TorchEngine}
"""Membership engines by ``--rdzv-conf engine=`` name.

``arendezvous`` (the default): arendezvous's own rendezvous, waiting on the store's change
notifications. ``torch``: torch's ``DynamicRendezvousHandler`` over
:class:`TorchRendezvousBackend` (torch's exact behaviour: threads, one-second polling, pickled
state). Each keeps its state in its own run, so all nodes of a job must use the same engine.
"""


def default_engine() -> str:
    """The engine used when ``--rdzv-conf engine=`` is not given.

    ``arendezvous`` when :mod:`arendezvous.rendezvous` can be imported, else ``torch``. Every
    node of a job must use the same engine (they keep their state in different runs), so pin it
    with ``engine=`` when nodes may run different arendezvous versions.
    """
    try:
        importlib.import_module("arendezvous.rendezvous")
    except ImportError:
        return "torch"
    return "arendezvous"


# -- the handler ------------------------------------------------------------------------------


class ArendezvousHandler(ClosesOnExit, torch_api.RendezvousHandler):
    """torch's ``RendezvousHandler`` over any arendezvous backend; what torchrun drives.

    Build it with :func:`create_handler` (torchrun does, through the entry point). Each
    :meth:`next_rendezvous` lets the engine decide the round, then returns the store torch's agent
    uses for the round: a client of the ``TCPStore`` rank 0 started for this round (a new one
    every round, so no round reads another's keys), whose address is also the workers'
    ``MASTER_ADDR``/``MASTER_PORT``. With
    ``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1`` the agents use the round's prefix of the backend
    store instead, and rank 0's workers host their own store, as with torch's handlers.

    :meth:`shutdown` releases everything the handler holds (torchrun's launcher calls it when the
    job ends); used as a context manager (``with create_handler(params) as handler:``), the
    handler shuts down on leaving the block.
    """

    def __init__(self, config: HandlerConfig, engine: _Engine, store: BackendStore) -> None:
        self._config = config
        self._engine = engine
        self._store = store
        self._lock = threading.Lock()
        self._server: TCPStore | None = None
        self._client: tuple[str, int, TCPStore] | None = None

    @property
    def config(self) -> HandlerConfig:
        """What the handler was built from."""
        return self._config

    @property
    def engine(self) -> _Engine:
        """The membership engine."""
        return self._engine

    def get_backend(self) -> str:
        return self._config.name

    @property
    def use_agent_store(self) -> bool:
        return os.environ.get(_DISABLE_SHARED_STORE_ENV, "0") != "1"

    def get_run_id(self) -> str:
        return self._config.run_id

    def next_rendezvous(self) -> torch_api.RendezvousInfo:
        """Join the next round; return its agent store, this node's rank and the world size.

        :raises torch...RendezvousClosedError: the run was closed.
        :raises torch...RendezvousTimeoutError: no round completed within ``join_timeout``.
        :raises torch...RendezvousConnectionError: the backend or rank 0's store is unreachable.
        :raises torch...RendezvousStateError: the stored state is corrupt.
        """
        with torch_errors():
            round_ = self._engine.next_round()
        try:
            return self._round_info(round_)
        except (dist.DistError, OSError) as exc:
            raise torch_api.RendezvousConnectionError(
                f"round bootstrap failed (rank {round_.rank} of {round_.world_size}): {exc}"
            ) from exc

    def _round_info(self, round_: _Round) -> torch_api.RendezvousInfo:
        rank, addr = round_.rank, self._config.local_addr
        bootstrap = round_.bootstrap
        if not self.use_agent_store:
            if bootstrap is None:
                bootstrap = torch_api.RendezvousStoreInfo.build(rank, round_.store, addr)
            return torch_api.RendezvousInfo(round_.store, rank, round_.world_size, bootstrap)
        if bootstrap is None:
            port = None
            if rank == 0:
                # A new server every round: workers keep their keys unprefixed in it.
                self._server = _bound_tcp_store(addr)
                port = self._server.port
            bootstrap = torch_api.RendezvousStoreInfo.build(
                rank, round_.store, addr, server_port=port
            )
        client = self._tcp_client(bootstrap.master_addr, bootstrap.master_port)
        agent_store = PrefixStore(_AGENT_STORE_PREFIX, client)
        return torch_api.RendezvousInfo(agent_store, rank, round_.world_size, bootstrap)

    def _tcp_client(self, addr: str, port: int) -> TCPStore:
        with self._lock:
            if self._client is not None and self._client[:2] == (addr, port):
                return self._client[2]
            client = TCPStore(
                addr, port, is_master=False, timeout=self._config.read_timeout
            )
            self._client = (addr, port, client)
            return client

    def is_closed(self) -> bool:
        with torch_errors():
            return self._engine.is_closed()

    def set_closed(self) -> None:
        with torch_errors():
            self._engine.set_closed()

    def num_nodes_waiting(self) -> int:
        with torch_errors():
            return self._engine.num_nodes_waiting()

    def shutdown(self) -> bool:
        """Close the rendezvous run (torch's semantics: the job is over) and release the backend.

        Returns ``False`` if closing the run failed; the backend is released either way, and the
        handler lets go of the last round's ``TCPStore`` server and client (they end once the
        caller drops the round's ``RendezvousInfo`` too).
        """
        try:
            with torch_errors():
                return self._engine.shutdown()
        except torch_api.RendezvousError as exc:
            log.warning("the %s rendezvous could not be shut down: %s", self._config.name, exc)
            return False
        finally:
            try:
                self._store.close()
            finally:
                with self._lock:
                    self._server = None
                    self._client = None

    def close(self) -> None:
        """:meth:`shutdown`, for ``with``: what leaving the block calls."""
        self.shutdown()


def create_handler(params: torch_api.RendezvousParameters) -> ArendezvousHandler:
    """Build the handler torchrun asked for: the creator torch's registry calls.

    :raises ValueError: bad ``--rdzv-conf``, an empty or malformed endpoint, an unknown scheme.
    :raises ImportError: the endpoint's store needs an extra that is not installed.
    """
    config = HandlerConfig.from_parameters(params)
    store = BackendStore(config.open_backend("c10d"), timeout=config.read_timeout)
    try:
        engine = ENGINES[config.engine](config, store)
    except BaseException:
        store.close()
        raise
    return ArendezvousHandler(config, engine, store)


def register(name: str = HANDLER_NAME) -> None:
    """Register the handler with torch under *name* without an entry point (idempotent)."""
    torch_api.rendezvous_handler_registry.register(name, create_handler)
