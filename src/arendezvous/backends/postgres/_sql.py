"""What the PostgreSQL backend stores and sends: the table, the statements, tokens, errors."""

from __future__ import annotations

import asyncio
import hashlib
import re
import struct
import zlib
from dataclasses import dataclass
from functools import cache
from typing import Any, Final

from ..._errors import ErrorRule, ErrorTable, RendezvousStateError

__all__ = (
    "CREATE_TABLE_SQL",
    "DEFAULT_TABLE",
    "HEADER_SIZE",
    "HEADER_START",
    "MAX_STATE_SIZE_LIMIT",
    "PostgresToken",
    "Statements",
    "advisory_key",
    "alive_sql",
    "channel",
    "decode",
    "encode",
    "error_table",
    "expiry_sql",
    "members_alive_sql",
    "quote_table",
    "sendable",
    "sendable_fields",
)

DEFAULT_TABLE: Final = "arendezvous_state"
"""The table that holds the runs' rows unless ``table=`` names another."""

CREATE_TABLE_SQL: Final = """\
CREATE TABLE IF NOT EXISTS {table} (
    run_id text PRIMARY KEY,
    incarnation bytea NOT NULL,
    version bigint GENERATED ALWAYS AS IDENTITY,
    state bytea NOT NULL,
    -- The run lifecycle: the server's time of the row's last write (list_runs tells ages by
    -- it), and when the row expires: 'infinity' unless written by a handle with expire_after.
    written_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    expires_at timestamptz NOT NULL DEFAULT 'infinity'
)"""
"""The table's definition; ``{table}`` is the quoted name. A DBA may create it ahead of time,
with the member table's objects (:func:`~._member_sql.create_members_sql`), which the state's
statements use too."""

MAX_STATE_SIZE_LIMIT: Final = 1 << 29
"""bytea and the protocol allow about 1 GiB; a rendezvous needs far less."""

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_MAX_IDENTIFIER_BYTES = 63  # PostgreSQL's NAMEDATALEN - 1; longer names are silently truncated
_MAGIC = b"ARDP"
_FORMAT_VERSION = 1
_HEADER = struct.Struct(">4sBI")

HEADER_START: Final = _MAGIC + bytes([_FORMAT_VERSION])
"""How every stored state of this backend starts (``list_runs`` tells its rows by it)."""

HEADER_SIZE: Final = _HEADER.size
"""The bytes of a stored state's header, before the state itself."""


@dataclass(frozen=True, slots=True)
class PostgresToken:
    """A PostgreSQL backend's token: the row's incarnation and the sequence value of its last write.

    Equal only to another :class:`PostgresToken` with the same fields (an exact type check comes
    first, so a foreign object's ``__eq__`` never runs).
    """

    incarnation: bytes
    version: int

    def __repr__(self) -> str:
        return f"<PostgresToken {self.incarnation[:4].hex()}...#{self.version}>"


def sendable(token: object) -> bool:
    """A PostgresToken with a bytes incarnation and a bigint version: only such a token is
    compared or sent (asyncpg refuses other types, and truncates a float version)."""
    return type(token) is PostgresToken and sendable_fields(token.incarnation, token.version)


def sendable_fields(incarnation: object, version: object) -> bool:
    """Whether an incarnation and a version taken from a caller's token (or member version) may
    be sent: exactly ``bytes`` and an ``int`` in bigint's range, checked by exact type so that no
    subclass's methods run."""
    return type(incarnation) is bytes and type(version) is int and -(2**63) <= version < 2**63


def encode(state: bytes) -> bytes:
    """The stored form of *state*: magic, format version, CRC-32 of the state, the state."""
    return _HEADER.pack(_MAGIC, _FORMAT_VERSION, zlib.crc32(state)) + state


def decode(stored: object) -> bytes:
    """The state in *stored*.

    :raises RendezvousStateError: *stored* is not what :func:`encode` makes.
    """
    if not isinstance(stored, bytes) or len(stored) < _HEADER.size:
        raise RendezvousStateError("the row does not hold arendezvous state (too short)")
    magic, version, checksum = _HEADER.unpack_from(stored)
    if magic != _MAGIC:
        raise RendezvousStateError(f"the row does not hold arendezvous state (magic {magic!r})")
    if version != _FORMAT_VERSION:
        raise RendezvousStateError(f"the row holds state of unknown format version {version}")
    state = stored[_HEADER.size :]
    if zlib.crc32(state) != checksum:
        raise RendezvousStateError("the row holds state whose checksum does not match")
    return state


def quote_table(table: object) -> tuple[str, str]:
    """Validate a table name (``name`` or ``schema.name``); return ``(quoted, plain)`` forms.

    Only plain identifiers are accepted, so quoting them cannot be escaped: the quoted form is the
    one string this backend ever puts into SQL text that did not come from itself.
    """
    if not isinstance(table, str):
        raise TypeError(f"table must be str, not {type(table).__name__}")
    parts = table.split(".")
    if len(parts) > 2 or not all(
        _IDENTIFIER.match(part) and len(part.encode()) <= _MAX_IDENTIFIER_BYTES for part in parts
    ):
        raise ValueError(
            f"table must be NAME or SCHEMA.NAME of letters, digits and underscores (each at most "
            f"{_MAX_IDENTIFIER_BYTES} bytes, not starting with a digit); got {table!r}"
        )
    return ".".join(f'"{part}"' for part in parts), table


def channel(table: str, run_id: str) -> str:
    """The ``NOTIFY`` channel of a run: channel names are identifiers of at most 63 bytes and run
    ids are any text, so it is a hash."""
    name = f"{table}\0{run_id}".encode()
    return f"arendezvous_{hashlib.sha256(name).hexdigest()[:40]}"


def advisory_key(table: str) -> int:
    """The advisory lock under which the table is created (one creator among many nodes)."""
    digest = hashlib.sha256(f"arendezvous create table {table}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def expiry_sql(seconds: str) -> str:
    """SQL: when a row written now expires, *seconds* (a float8 parameter; ``NULL``: never)
    from the server's clock."""
    return f"coalesce(clock_timestamp() + make_interval(secs => {seconds}), 'infinity')"


def members_alive_sql(members: str, run: str) -> str:
    """SQL: whether a member row of run *run* (an SQL expression) has not expired."""
    return (f"EXISTS (SELECT FROM {members} AS live_m WHERE live_m.run_id = {run}"
            " AND live_m.expires_at > clock_timestamp())")  # fmt: skip


def alive_sql(table: str, members: str, run: str) -> str:
    """SQL: whether run *run* (an SQL expression) is alive: some row of it, its state's or a
    member's, has not expired. Each row's expiry is pushed back by its own writes, so a run
    lives on while anything of it is written: heartbeats keep a run whose state is quiet alive.
    (The members are looked at in key order until one lives: the first, as a rule.)"""
    state_alive = (f"EXISTS (SELECT FROM {table} AS live_s WHERE live_s.run_id = {run}"
                   " AND live_s.expires_at > clock_timestamp())")  # fmt: skip
    return f"({state_alive} OR {members_alive_sql(members, run)})"


class Statements:
    """The SQL of one table. Both CAS statements return one row (written, version, incarnation,
    state) -- the new version if the write won, else the current row -- or none when the run
    has no row (or has expired).

    *members* is the quoted name of the member table (:mod:`._member_sql`): a run is its state
    row and its member rows, and it lives while one of them does.
    """

    def __init__(self, table: str, members: str) -> None:
        self.create = CREATE_TABLE_SQL.format(table=table)
        live_members = members_alive_sql(members, "$1")
        self.get = (
            f"SELECT version, incarnation, state FROM {table} AS s "
            f"WHERE s.run_id = $1 AND (s.expires_at > clock_timestamp() OR {live_members})"
        )
        # A run that expired but still has rows must go before it is created again, or its
        # member rows would come back to life with it: the last row (alive false) says so, and
        # the caller has the run purged, then tries again. With no row at all, a rival's
        # insert committed after this statement's snapshot: a new statement sees it.
        self.insert = f"""\
WITH inserted AS (
    INSERT INTO {table} (run_id, incarnation, state, written_at, expires_at)
    SELECT $1, $2, $3, clock_timestamp(), {expiry_sql("$5")}
    WHERE NOT EXISTS (SELECT FROM {members} AS o WHERE o.run_id = $1) OR {live_members}
    ON CONFLICT (run_id) DO NOTHING
    RETURNING version, pg_notify($4, version::text)
)
SELECT true AS written, version, NULL::bytea AS incarnation, NULL::bytea AS state,
       true AS alive FROM inserted
UNION ALL
SELECT false, c.version, c.incarnation, c.state,
       c.expires_at > clock_timestamp() OR {live_members} FROM {table} AS c
WHERE c.run_id = $1 AND NOT EXISTS (SELECT FROM inserted)
UNION ALL
SELECT false, NULL, NULL, NULL, {live_members}
WHERE EXISTS (SELECT FROM {members} AS o WHERE o.run_id = $1)
  AND NOT EXISTS (SELECT FROM inserted) AND NOT EXISTS (SELECT FROM {table} WHERE run_id = $1)"""
        # The locking read comes first: under READ COMMITTED it waits for a concurrent writer and
        # returns the row that writer committed, so the token is compared with the latest row and
        # a loser reports the winner's row. Without the lock the comparison would use this
        # statement's snapshot, and two racing writers could both win (measured: it happens).
        # $6 is the stored bytes the caller's token was read with (compared whole: cheaper than
        # hashing either side for the small states of a rendezvous): a state changed in place,
        # its version kept, is then not overwritten but returned, and refused if it is corrupt.
        # An expired run has no state: nothing is written and nothing returned.
        self.update = f"""\
WITH current AS (
    SELECT c.version, c.incarnation, c.state, c.expires_at FROM {table} AS c WHERE c.run_id = $1
    FOR NO KEY UPDATE
), live AS (
    SELECT EXISTS (SELECT FROM current AS c WHERE c.expires_at > clock_timestamp())
           OR {live_members} AS alive
), updated AS (
    UPDATE {table} AS u SET version = DEFAULT, state = $4, written_at = clock_timestamp(),
        expires_at = {expiry_sql("$7")}
    WHERE u.run_id = $1
      AND EXISTS (SELECT FROM current AS c, live
                  WHERE c.version = $2 AND c.incarnation = $3 AND c.state = $6 AND live.alive)
    RETURNING u.version, pg_notify($5, u.version::text)
)
SELECT true AS written, version, NULL::bytea AS incarnation, NULL::bytea AS state FROM updated
UNION ALL
SELECT false, c.version, c.incarnation, c.state FROM current AS c, live
WHERE live.alive AND NOT EXISTS (SELECT FROM updated)"""


@cache
def error_table(asyncpg: Any) -> ErrorTable:
    """asyncpg's exceptions (the module *asyncpg*) and ours."""
    return (
        # A table of that name that is not ours is as foreign as a value that is not ours.
        ErrorRule(
            (
                asyncpg.UndefinedColumnError,
                asyncpg.DatatypeMismatchError,
                asyncpg.WrongObjectTypeError,
            ),
            RendezvousStateError,
            detail="the table does not have arendezvous's layout: {type}: {exc}",
        ),
        ErrorRule((TimeoutError, asyncio.TimeoutError), detail="no answer within {timeout:g} s"),
        ErrorRule(
            (
                asyncpg.PostgresError,
                asyncpg.InterfaceError,
                asyncpg.exceptions.InternalClientError,
                OSError,
            ),
        ),
    )
