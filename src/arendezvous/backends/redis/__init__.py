"""The Redis backend: one hash per run in Redis or Valkey, written by one Lua script.

A run's state lives in the hash ``<key_prefix><run_id>`` with the fields ``format``,
``incarnation``, ``counter``, ``state`` and ``writer``. Every ``set_state`` is a single ``EVALSHA``
of :data:`SET_STATE_SCRIPT`, which compares the caller's token with the stored one, writes the new
state and counter, and ``PUBLISH``es a change notice, all atomically (Redis runs a script to the
end before serving anything else), so there is no ``WATCH``/``MULTI`` retry loop and a losing
writer gets the current state from the same reply. ``get_state`` is one ``HGETALL``.

The token is a :class:`RedisToken`: the hash's *incarnation* (128 random bits drawn by the writer
that created the hash) and its *counter*. The counter never repeats within an incarnation and a
hash deleted and created again gets a new incarnation, so no token ever comes back (no ABA).

``wait_for_change`` shares one subscription per handle (all its waiters' hints come from it): the
channel named like the key, subscribed and confirmed before the state is read, so no write can
slip in between unseen. A notice is only a hint: the state is re-read after every notice and
after every reconnect.

The run's member records (the optional member table the rendezvous uses, one record per node)
live in a second hash beside the state, ``<key_prefix><run_id>\x00members``, each operation one
script too: see :mod:`._members` and :class:`RedisMemberTable`.

The client is redis-py's ``redis.asyncio``. It runs only on asyncio; from trio, the backend runs
it on arendezvous's asyncio loop thread (see :mod:`arendezvous.backends._network`).

The package: ``_protocol`` (what is stored and sent), ``_backend`` (the handle), ``_feed`` (the
subscription), ``_members`` (the member table), ``_url`` (``redis://`` URLs).
"""

from __future__ import annotations

from .._network import DEFAULT_TIMEOUT
from ._backend import DEFAULT_KEY_PREFIX, RedisBackend
from ._members import MEMBER_TABLE_SCRIPT, RedisMemberTable, RedisMemberVersion
from ._protocol import MAX_STATE_SIZE_LIMIT, SET_STATE_SCRIPT, RedisToken
from ._url import from_url

__all__ = (
    "DEFAULT_KEY_PREFIX",
    "DEFAULT_TIMEOUT",
    "MAX_STATE_SIZE_LIMIT",
    "MEMBER_TABLE_SCRIPT",
    "SET_STATE_SCRIPT",
    "RedisBackend",
    "RedisMemberTable",
    "RedisMemberVersion",
    "RedisToken",
    "from_url",
)
