"""Everything a backend author needs: the contract, its errors, and the checks every backend makes.

Write a backend against this module alone::

    from arendezvous.contract import (
        DEFAULT_MAX_STATE_SIZE, AsyncRendezvousBackend, RunHandle, Token,
        check_run_id, check_state, check_timeout,
    )

    class MyBackend(RunHandle, AsyncRendezvousBackend):
        def __init__(self, run_id: str) -> None:
            self._run_id = check_run_id(run_id)   # RunHandle's run_id property returns it
            self._closed = False                  # RunHandle's _check_open() reads it
            ...

        async def set_state(self, state, token=None):
            self._check_open()                              # BackendClosedError once closed
            state = check_state(state, DEFAULT_MAX_STATE_SIZE)  # TypeError / ValueError
            ...

        async def wait_for_change(self, token, *, timeout=None):
            check_timeout(timeout)                          # TypeError / ValueError (NaN)
            ...

The contract:

* :class:`AsyncRendezvousBackend` -- the abstract base: ``name``, ``get_state``, ``set_state``,
  ``wait_for_change``, ``aclose`` and ``async with``. Its docstrings and the README's "The
  backend contract" say what each promises; :mod:`arendezvous.testing` proves a backend keeps
  those promises.
* :data:`Token` -- an opaque, hashable version of the stored state. Compare tokens only with
  ``==``; when comparing a caller's token with yours, check its exact type first, so that a
  foreign object with a hostile ``__eq__`` can never match.
* :data:`DEFAULT_MAX_STATE_SIZE` -- the default size limit (1 MiB).
* The errors, one tree rooted at :class:`RendezvousError`: :class:`RendezvousStateError` for
  stored bytes that cannot be decoded, :class:`RendezvousConnectionError` for a store that
  cannot be reached (chain the cause), :class:`BackendClosedError` for a closed handle;
  :class:`RendezvousTimeoutError`, :class:`RendezvousClosedError` and
  :class:`DuplicateNodeError` belong to the rendezvous.

The helpers, so that every backend refuses the same bad input with the same errors:

* :func:`check_state` -- ``state`` must be exactly ``bytes`` (a ``bytearray`` could change
  under you) and within the limit; call it before anything is sent.
* :func:`check_timeout` -- a wait's timeout is ``None`` or a number, never NaN.
* :func:`check_run_id` -- a run id is a non-empty ``str``.
* :class:`RunHandle` -- a mixin giving a handle its ``run_id`` property and the closed check
  ``_check_open()``; set ``self._run_id`` and ``self._closed`` in ``__init__``.

The optional member table, which makes the rendezvous cost O(1) store operations per node
(a backend without one still carries it, inside its one blob):

* :class:`MemberTable` -- return one from your backend's ``member_table()``; :class:`Member` is a
  record and :class:`MemberPut` what a put returns; :mod:`arendezvous.testing.members` proves it.
* :func:`check_node`, :func:`check_group`, :func:`check_member_value` -- the same bad-input rules
  for every table.
"""

from __future__ import annotations

from ._backend import DEFAULT_MAX_STATE_SIZE as DEFAULT_MAX_STATE_SIZE
from ._backend import AsyncRendezvousBackend as AsyncRendezvousBackend
from ._backend import RunHandle as RunHandle
from ._backend import RunInfo as RunInfo
from ._backend import Token as Token
from ._backend import check_run_id as check_run_id
from ._backend import check_state as check_state
from ._backend import check_timeout as check_timeout
from ._errors import BackendClosedError as BackendClosedError
from ._errors import DuplicateNodeError as DuplicateNodeError
from ._errors import RendezvousClosedError as RendezvousClosedError
from ._errors import RendezvousConnectionError as RendezvousConnectionError
from ._errors import RendezvousError as RendezvousError
from ._errors import RendezvousStateError as RendezvousStateError
from ._errors import RendezvousTimeoutError as RendezvousTimeoutError
from ._members import Member as Member
from ._members import MemberPut as MemberPut
from ._members import MemberTable as MemberTable
from ._members import check_group as check_group
from ._members import check_member_value as check_member_value
from ._members import check_node as check_node

__all__ = (
    "DEFAULT_MAX_STATE_SIZE",
    "AsyncRendezvousBackend",
    "BackendClosedError",
    "DuplicateNodeError",
    "Member",
    "MemberPut",
    "MemberTable",
    "RendezvousClosedError",
    "RendezvousConnectionError",
    "RendezvousError",
    "RendezvousStateError",
    "RendezvousTimeoutError",
    "RunHandle",
    "RunInfo",
    "Token",
    "check_group",
    "check_member_value",
    "check_node",
    "check_run_id",
    "check_state",
    "check_timeout",
)
