"""The arendezvous test kit: prove any backend against the contract, under racing writers.

* :mod:`arendezvous.testing.conformance` -- pytest classes to subclass with a factory.
* :mod:`arendezvous.testing.stateful` -- a Hypothesis state machine of racing writers.

Both need the ``dev`` extra's test tools (pytest, Hypothesis); importing this package does not.
"""

from __future__ import annotations

__all__ = ()
