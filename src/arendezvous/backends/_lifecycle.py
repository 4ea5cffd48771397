"""What the bundled backends share of the run lifecycle: the ``expire_after`` option and the log
records of runs that expire or are deleted (logged under each backend's own logger)."""

from __future__ import annotations

import logging
import math

from .._log import log_event

__all__ = ("check_expire_after", "log_run_deleted", "log_run_expired")


def check_expire_after(expire_after: object) -> float | None:
    """Validate a backend's ``expire_after``: ``None`` (runs never expire) or a positive, finite
    number of seconds; return it as a ``float``.

    :raises TypeError: it is neither ``None`` nor a number.
    :raises ValueError: it is not positive and finite.
    """
    if expire_after is None:
        return None
    if isinstance(expire_after, bool) or not isinstance(expire_after, (int, float)):
        raise TypeError(
            f"expire_after must be a number of seconds or None, not {type(expire_after).__name__}"
        )
    if not 0 < expire_after < math.inf:
        raise ValueError("expire_after must be a positive, finite number of seconds")
    return float(expire_after)


def log_run_expired(logger: logging.Logger, run_id: str, idle: float,
                    expire_after: float) -> None:
    """INFO: *run_id* was removed because nobody wrote to it for *idle* seconds."""
    log_event(logger, logging.INFO, "run_expired",
              "run %(run_id)r expired: nobody wrote to it for %(idle).3g s "
              "(expire_after=%(expire_after)g s)",
              stacklevel=2, run_id=run_id, idle=idle, expire_after=expire_after)


def log_run_deleted(logger: logging.Logger, run_id: str) -> None:
    """DEBUG: ``delete_run()`` removed *run_id* (whoever asked for it logs why, at INFO)."""
    log_event(logger, logging.DEBUG, "run_deleted", "run %(run_id)r deleted", stacklevel=2,
              run_id=run_id)
