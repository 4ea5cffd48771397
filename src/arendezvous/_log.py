"""Structured log records: a human sentence and the same facts as attributes of the record.

Every record the library logs under an ``arendezvous.*`` logger names its *event* (a stable
snake_case name such as ``round_formed``) and carries its facts (``node``, ``run_id``,
``round``, ``world_size``...) as attributes of the :class:`logging.LogRecord`, through
``extra``. A plain formatter prints the sentence; a JSON formatter (or a filter) reads the
attributes, so nobody parses sentences. The sentence is formatted from the same facts, lazily,
by :mod:`logging` itself: nothing is formatted for a level nobody listens to.
"""

from __future__ import annotations

import logging
from typing import Any

__all__ = ("log_event",)

# Attributes a LogRecord already has: a fact under one of these names would make logging raise.
_RESERVED = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


def log_event(logger: logging.Logger, level: int, event: str, sentence: str, *,
              stacklevel: int = 1, **facts: Any) -> None:
    """Log *sentence* (``%(name)s``-style placeholders filled from *facts*) at *level*, with
    ``event`` and every fact as attributes of the record.

    *stacklevel* is :meth:`logging.Logger.log`'s, counted from the caller of this function: a
    wrapper that adds facts of its own passes 2, so that the record names its caller's line.
    """
    if not logger.isEnabledFor(level):
        return
    assert _RESERVED.isdisjoint(facts), f"a fact shadows a LogRecord attribute: {facts}"
    # A single, non-empty mapping argument is what %(name)s placeholders are formatted from.
    arguments = (facts,) if facts else ()
    # One more level: the record names the line that logged, not this helper.
    logger.log(level, sentence, *arguments, extra={"event": event, **facts},
               stacklevel=stacklevel + 1)
