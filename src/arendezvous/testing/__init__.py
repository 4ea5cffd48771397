"""The arendezvous test kit: prove any backend against the contract, under racing writers.

Every public name of the kit is importable from here, and each is imported on first use, so
``import arendezvous.testing`` needs no test tool::

    from arendezvous.testing import BackendConformance, backend_state_machine, check

* :mod:`~arendezvous.testing.conformance` -- pytest classes to subclass with a factory
  (:class:`BackendConformance`, :class:`CorruptStateConformance`).
* :mod:`~arendezvous.testing.lifecycle` -- :class:`RunLifecycleConformance`, for a backend that
  deletes, lists and expires runs.
* :mod:`~arendezvous.testing.members` -- :class:`MemberTableConformance`, for a backend that
  offers the optional member table (:meth:`~arendezvous.AsyncRendezvousBackend.member_table`).
* :mod:`~arendezvous.testing.stateful` -- a Hypothesis state machine of racing writers
  (:func:`backend_state_machine`).
* :mod:`~arendezvous.testing.history` -- record every call on any backend
  (:class:`RecordingBackend`, :class:`Recorder`); JSON lines; :func:`merge`.
* :mod:`~arendezvous.testing.linearizability` -- :func:`check` recorded histories; explain
  violations.
* :mod:`~arendezvous.testing.faults` -- :class:`FaultyBackend` injects delays, dropped
  connections and timeouts.
* :mod:`~arendezvous.testing.wrapper` -- :class:`BackendWrapper`, the delegating base of the
  wrappers above and of your own.
* :mod:`~arendezvous.testing.servers` -- throwaway Redis, etcd and PostgreSQL servers on
  127.0.0.1 that can be killed and restarted.

A failed conformance or state-machine check raises :class:`ContractViolation`. The conformance
classes need pytest, the state machine Hypothesis, and the trio half of either trio:
``pip install 'arendezvous[testing]'`` brings all three. History, linearizability, faults and
the wrapper need no test tool.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import install_lazy_exports

if TYPE_CHECKING or not install_lazy_exports(__name__):
    from ._promises import ContractViolation as ContractViolation
    from .conformance import BackendConformance as BackendConformance
    from .conformance import CorruptStateConformance as CorruptStateConformance
    from .conformance import OpenBackend as OpenBackend
    from .faults import Fault as Fault
    from .faults import FaultyBackend as FaultyBackend
    from .faults import InjectedFault as InjectedFault
    from .history import FORMAT as FORMAT
    from .history import History as History
    from .history import JsonTokenCodec as JsonTokenCodec
    from .history import OpaqueToken as OpaqueToken
    from .history import Operation as Operation
    from .history import OperationKind as OperationKind
    from .history import Outcome as Outcome
    from .history import Recorder as Recorder
    from .history import RecordingBackend as RecordingBackend
    from .history import TokenCodec as TokenCodec
    from .history import load as load
    from .history import merge as merge
    from .lifecycle import RunLifecycleConformance as RunLifecycleConformance
    from .linearizability import CheckResult as CheckResult
    from .linearizability import CheckStats as CheckStats
    from .linearizability import Explanation as Explanation
    from .linearizability import Verdict as Verdict
    from .linearizability import check as check
    from .members import MemberTableConformance as MemberTableConformance
    from .servers import ServerNotFoundError as ServerNotFoundError
    from .servers import find_binary as find_binary
    from .servers import free_port as free_port
    from .servers.etcd import EtcdServer as EtcdServer
    from .servers.postgres import PostgresServer as PostgresServer
    from .servers.redis import RedisServer as RedisServer
    from .stateful import BackendFactory as BackendFactory
    from .stateful import backend_state_machine as backend_state_machine
    from .wrapper import BackendWrapper as BackendWrapper

__all__ = (
    "FORMAT",
    "BackendConformance",
    "BackendFactory",
    "BackendWrapper",
    "CheckResult",
    "CheckStats",
    "ContractViolation",
    "CorruptStateConformance",
    "EtcdServer",
    "Explanation",
    "Fault",
    "FaultyBackend",
    "History",
    "InjectedFault",
    "JsonTokenCodec",
    "MemberTableConformance",
    "OpaqueToken",
    "OpenBackend",
    "Operation",
    "OperationKind",
    "Outcome",
    "PostgresServer",
    "Recorder",
    "RecordingBackend",
    "RedisServer",
    "RunLifecycleConformance",
    "ServerNotFoundError",
    "TokenCodec",
    "Verdict",
    "backend_state_machine",
    "check",
    "find_binary",
    "free_port",
    "load",
    "merge",
)
