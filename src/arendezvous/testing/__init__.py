"""The arendezvous test kit: prove any backend against the contract, under racing writers.

* :mod:`arendezvous.testing.conformance` -- pytest classes to subclass with a factory.
* :mod:`arendezvous.testing.stateful` -- a Hypothesis state machine of racing writers.
* :mod:`arendezvous.testing.history` -- record every call on any backend; JSON lines; merge.
* :mod:`arendezvous.testing.linearizability` -- check recorded histories; explain violations.
* :mod:`arendezvous.testing.faults` -- inject delays, dropped connections and timeouts.
* :mod:`arendezvous.testing.servers` -- throwaway Redis, etcd and PostgreSQL servers on 127.0.0.1
  that can be killed and restarted (used by the tests and by ``arendezvous check --start``).

The first two need the ``dev`` extra's test tools (pytest, Hypothesis); history, linearizability
and faults need no test tools, and importing this package imports none of them.
"""

from __future__ import annotations

__all__ = ()
