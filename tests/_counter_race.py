"""The cross-process lost-update race, from the test kit (:mod:`arendezvous.testing._counter`)."""

from __future__ import annotations

from arendezvous.testing._counter import run_counter_race

__all__ = ("run_counter_race",)
