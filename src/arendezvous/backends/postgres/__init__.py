"""The PostgreSQL backend: one row per run in a table, each compare-and-swap one SQL statement.

The table (created on first use, see :data:`CREATE_TABLE_SQL`)::

    run_id      text PRIMARY KEY
    incarnation bytea NOT NULL       -- 16 random bytes, new each time the run's row is created
    version     bigint GENERATED ALWAYS AS IDENTITY   -- a new sequence value on every write
    state       bytea NOT NULL       -- b"ARDP", format version, CRC-32 of the state, the state
    written_at  timestamptz NOT NULL -- the server's time of the last write
    expires_at  timestamptz NOT NULL -- 'infinity', or the last write plus expire_after

A token is :class:`PostgresToken` ``(incarnation, version)``. The version comes from the table's
sequence, so it never repeats within the table, not even when a row is deleted and created again;
the random incarnation keeps a token of another database, or of a table dropped and created again
(whose sequence starts over), from ever matching.

``set_state`` is a single statement, hence a single transaction: a locking read of the current row,
the conditional ``UPDATE`` (or ``INSERT ... ON CONFLICT DO NOTHING`` for token ``None``), a
``pg_notify`` in the write's ``RETURNING`` list so the notice is sent exactly when the write
commits, and -- when the write loses -- the current row, all in one round trip. The ``UPDATE`` also
requires the row to hold the very bytes the caller's token was read with, so a state corrupted in
place, its version kept, is returned and refused, never overwritten.

``wait_for_change`` shares one listening connection per handle (all its waiters' hints come from
it): ``LISTEN`` first, then a read; every notice, and every reconnect, is followed by another read,
so a lost notice only costs latency.

The run's member table (:meth:`PostgresBackend.member_table`, see :mod:`._members`) keeps one
row per node in ``<table>_members`` beside the state table, made on first use like it
(:data:`CREATE_MEMBERS_SQL`, :func:`create_members_sql`): every operation one round trip, a put
returning its group's size counted atomically with the write, ages by the server's clock, and
no ``NOTIFY``, so a heartbeat wakes nobody. Its versions are :class:`PostgresMemberVersion`.

The run lifecycle: a run is its state row and its member rows, and it lives while one of them
has not expired (each row's ``expires_at`` is pushed back by its own writes, so heartbeats keep a
run whose state is quiet alive); every read leaves out an expired run. ``delete_run`` and the
clean-up of expired runs call the function ``<table>_purge``, which deletes both kinds of rows
in one transaction under the run's advisory lock (every member put holds it shared).
``list_runs`` is one statement joining both tables. The state's statements read the member
table, so the backend makes both tables (and their functions) together, on first use.

Connections: a small pool of the handle's own (``_pool`` says why not ``asyncpg.Pool``), plus the
listening connection while anyone waits.

Why asyncpg: it is asyncio-native (no thread hop per query), speaks the binary protocol with
prepared statements cached per connection -- the CAS statement is parsed and planned once per
connection, not per call -- enforces per-statement timeouts with a timer rather than a task, and
hands ``NOTIFY`` to a plain callback, which is all a listener needs. It runs only on asyncio; from
trio, the backend runs it on arendezvous's asyncio loop thread.

The package: ``_sql`` (what is stored and sent), ``_backend`` (the handle), ``_members`` and
``_member_sql`` (the member table and its SQL), ``_pool``, ``_feed`` (the listener), ``_dsn`` and
``_url`` (URLs).
"""

from __future__ import annotations

from .._network import DEFAULT_TIMEOUT
from ._backend import DEFAULT_HEARTBEAT, DEFAULT_POOL_SIZE, PostgresBackend
from ._member_sql import CREATE_MEMBERS_SQL, create_members_sql
from ._members import PostgresMemberTable, PostgresMemberVersion
from ._sql import CREATE_TABLE_SQL, DEFAULT_TABLE, PostgresToken
from ._url import from_url

__all__ = (
    "CREATE_MEMBERS_SQL",
    "CREATE_TABLE_SQL",
    "DEFAULT_HEARTBEAT",
    "DEFAULT_POOL_SIZE",
    "DEFAULT_TABLE",
    "DEFAULT_TIMEOUT",
    "PostgresBackend",
    "PostgresMemberTable",
    "PostgresMemberVersion",
    "PostgresToken",
    "create_members_sql",
    "from_url",
)
