"""The one exception tree every part of arendezvous raises from.

Callers catch :class:`RendezvousError` for "anything went wrong in the rendezvous layer", or one of
its children when they can act on the difference: a store that cannot be reached may be retried
(:class:`RendezvousConnectionError`), stored bytes that cannot be decoded may not
(:class:`RendezvousStateError`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeAlias

__all__ = (
    "BackendClosedError",
    "DuplicateNodeError",
    "ErrorRule",
    "ErrorTable",
    "ExceptionMapper",
    "RendezvousClosedError",
    "RendezvousConnectionError",
    "RendezvousError",
    "RendezvousStateError",
    "RendezvousTimeoutError",
    "map_exceptions",
    "translate",
)


class RendezvousError(Exception):
    """Root of every error arendezvous raises on purpose."""


class RendezvousStateError(RendezvousError):
    """The stored state cannot be decoded (corrupt, truncated, foreign or of an unknown version).

    Nothing is overwritten when this is raised: the bytes stay in the store for inspection.
    """


class RendezvousConnectionError(RendezvousError):
    """The store could not be reached or failed mid-call; the cause is chained as ``__cause__``.

    Whether a write that failed this way took effect is unknown; re-read before retrying.
    """


class BackendClosedError(RendezvousConnectionError):
    """The backend handle was closed with ``aclose()``/``close()`` and cannot be used again."""


class RendezvousTimeoutError(RendezvousError):
    """A rendezvous did not complete within its deadline."""


class RendezvousClosedError(RendezvousError):
    """The rendezvous run was closed; no new round will start."""


class DuplicateNodeError(RendezvousError):
    """A live node of the run already uses this node id; every node needs an id of its own.

    Raised by ``next_rendezvous()`` within about one heartbeat interval of finding the id in use
    (the other node's heartbeat proves it alive). A record left by a node that died is taken over
    once it has been silent for the heartbeat timeout instead.
    """

    def __init__(self, node: str, detail: str = "") -> None:
        self.node = node
        message = f"node id {node!r} is already in use by a live node of this run"
        super().__init__(f"{message}: {detail}" if detail else message)


@dataclass(frozen=True)
class ErrorRule:
    """One row of a store's error table: which client exceptions become which of our errors.

    A client exception that is an instance of one of *types* (and for which *when* holds, if
    given) becomes *error*, with the message ``"<what>: <detail>"``. *detail* is a template
    formatted with ``type`` (the exception's class name), ``exc`` (the exception) and the context
    given to :func:`map_exceptions` (e.g. ``timeout``), or a callable of the exception; by default
    ``"{type}: {exc}"``. Rows are tried in order, so specific rows go first.
    """

    types: tuple[type[BaseException], ...]
    error: type[RendezvousError] = RendezvousConnectionError
    detail: str | Callable[[BaseException], str] = "{type}: {exc}"
    when: Callable[[BaseException], bool] | None = None

    def matches(self, exc: BaseException) -> bool:
        """Whether this row applies to *exc*."""
        return isinstance(exc, self.types) and (self.when is None or self.when(exc))

    def describe(self, exc: BaseException, context: Mapping[str, object]) -> str:
        """The detail part of the message for *exc*."""
        if callable(self.detail):
            return self.detail(exc)
        return self.detail.format(type=type(exc).__name__, exc=exc, **context)


ErrorTable: TypeAlias = tuple[ErrorRule, ...]
"""A store's exceptions and ours, declared as data: every backend has one, applied by
:func:`map_exceptions` (the pattern of httpcore's ``map_exceptions``)."""


def translate(
    table: ErrorTable, exc: BaseException, what: str, **context: object
) -> RendezvousError | None:
    """Our error for the client's *exc* by *table* (raise it ``from exc``), or ``None``."""
    for rule in table:
        if rule.matches(exc):
            return rule.error(f"{what}: {rule.describe(exc, context)}")
    return None


class ExceptionMapper:
    """A reusable context manager applying an error table; see :func:`map_exceptions`.

    It keeps no state between uses, so a backend builds one per operation once and enters it on
    every call: cheaper on a hot path than a generator-based context manager, and *what* (a
    callable) is only formatted when something is actually raised.
    """

    __slots__ = ("_context", "_rows", "_what")

    def __init__(
        self,
        rows: ErrorTable,
        what: str | Callable[[], str],
        context: Mapping[str, object],
    ) -> None:
        self._rows = rows
        self._what = what
        self._context = context

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: BaseException | None, traceback: object) -> None:
        if not isinstance(exc, Exception) or isinstance(exc, RendezvousError):
            return  # no error, cancellation, or ours already: it goes on as it is
        what = self._what if isinstance(self._what, str) else self._what()
        error = translate(self._rows, exc, what, **self._context)
        if error is not None:
            raise error from exc


def map_exceptions(
    table: ErrorTable = (),
    *,
    connection: tuple[type[BaseException], ...] = (),
    state: tuple[type[BaseException], ...] = (),
    what: str | Callable[[], str],
    **context: object,
) -> ExceptionMapper:
    """Re-raise a store client's exceptions as ours, the original chained as ``__cause__``.

    Use as ``with map_exceptions(table, what=...):``. The rows of *table* are tried first; then
    *state* exceptions become :class:`RendezvousStateError` and *connection* exceptions
    :class:`RendezvousConnectionError` (a shorthand for a table of two rows). *what* says what
    was being done (never credentials), as text or a callable giving it; *context* fills the
    rows' detail templates. Our own errors, anything no row names, and cancellation (not an
    ``Exception``) pass through untouched.
    """
    rows = table
    if state or connection:
        rows = (*table, ErrorRule(state, RendezvousStateError), ErrorRule(connection))
    return ExceptionMapper(rows, what, context)
