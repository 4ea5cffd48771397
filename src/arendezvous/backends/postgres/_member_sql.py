"""What the PostgreSQL member table stores and sends: its objects, their names and statements.

Beside the state table ``<table>`` live ``<table>_members`` (one row per node of a run), the
sequence its versions and seqs come from, an index on ``(run_id, group_name, seq)`` and the function
``<table>_members_put`` that does a put in one round trip (see :data:`CREATE_MEMBERS_SQL`).
"""

from __future__ import annotations

import hashlib
from typing import Final, NamedTuple

from ..._members import MAX_GROUP_LENGTH, MAX_MEMBER_VALUE, MAX_NODE_LENGTH
from ._sql import DEFAULT_TABLE, quote_table

__all__ = (
    "CREATE_MEMBERS_SQL",
    "INCARNATION_BYTES",
    "MemberNames",
    "MemberStatements",
    "create_members_sql",
    "group_lock_key",
    "member_names",
)

INCARNATION_BYTES: Final = 16
"""The length of a row's random incarnation, drawn when the row is created."""

_MAX_IDENTIFIER_BYTES = 63  # PostgreSQL's NAMEDATALEN - 1; longer names are silently truncated
_PUT_ATTEMPTS = 8  # a create retried while the row that beat it keeps disappearing


def _valid(row: str) -> str:
    """Whether row *row* is one arendezvous could have written: the one rule, in SQL, that reads
    report (as the ``valid`` column) and writes require, so a corrupt row is refused and never
    overwritten. (Text holds neither NUL nor lone surrogates, so the lengths are all to check.)"""
    return (
        f"(octet_length({row}.incarnation) = {INCARNATION_BYTES}"
        f" AND octet_length({row}.value) <= {MAX_MEMBER_VALUE}"
        f" AND char_length({row}.node) BETWEEN 1 AND {MAX_NODE_LENGTH}"
        f" AND char_length({row}.group_name) BETWEEN 1 AND {MAX_GROUP_LENGTH}"
        f" AND isfinite({row}.written_at))"
    )


def _record(row: str) -> str:
    """The columns every statement returns for a record: its fields, its age by the server's
    clock (epochs subtracted as float8, so an infinite time reads as an infinite age rather than
    an error) and whether it is valid."""
    return (
        f"{row}.group_name, {row}.value, {row}.incarnation, {row}.version, {row}.seq, "
        f"date_part('epoch', clock_timestamp()) - date_part('epoch', {row}.written_at) AS age, "
        f"{_valid(row)} AS valid"
    )


CREATE_MEMBERS_SQL: Final = f"""\
-- Not owned by the table: dropped with it and made again, it would start over (the rows'
-- incarnations would still keep versions apart); kept, it numbers on.
CREATE SEQUENCE IF NOT EXISTS {{sequence}};
CREATE TABLE IF NOT EXISTS {{members}} (
    run_id text NOT NULL,
    node text NOT NULL,
    group_name text NOT NULL,
    value bytea NOT NULL,
    incarnation bytea NOT NULL,
    version bigint NOT NULL DEFAULT nextval('{{sequence}}'),
    seq bigint NOT NULL DEFAULT nextval('{{sequence}}'),
    written_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (run_id, node)
) WITH (fillfactor = 70);  -- room in each page, so a heartbeat's update stays in it (HOT)
-- Counts a group, and lists it in seq order without sorting; a heartbeat changes none of it.
CREATE INDEX IF NOT EXISTS {{index}} ON {{members}} (run_id, group_name, seq);
CREATE OR REPLACE FUNCTION {{put}}(
    p_run_id text, p_node text, p_group text, p_value bytea,
    p_incarnation bytea, p_version bigint, p_new_incarnation bytea, p_lock bigint
) RETURNS TABLE (
    written boolean, group_size bigint, group_name text, value bytea, incarnation bytea,
    version bigint, seq bigint, age double precision, valid boolean
) LANGUAGE plpgsql VOLATILE AS $put$
#variable_conflict use_column
DECLARE
    cur record;
    seen boolean := false;
BEGIN
    -- Each statement of a VOLATILE function reads a fresh snapshot under READ COMMITTED, so a
    -- statement after the lock sees every put into the group committed before it was granted.
    -- Under a stricter level all would share the first one: refuse rather than miscount.
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'the arendezvous member table needs READ COMMITTED transactions, '
                        'not %', upper(current_setting('transaction_isolation'))
            USING ERRCODE = 'invalid_transaction_state';
    END IF;
    FOR attempt IN 1..{_PUT_ATTEMPTS} LOOP
        SELECT {_record('m')} INTO cur
        FROM {{members}} AS m WHERE m.run_id = p_run_id AND m.node = p_node;
        seen := FOUND;
        -- A put that cannot win returns the current row without waiting for the group's lock.
        IF p_version IS NULL THEN
            EXIT WHEN seen;
        ELSIF NOT seen OR cur.version IS DISTINCT FROM p_version
              OR cur.incarnation IS DISTINCT FROM p_incarnation OR cur.valid IS NOT TRUE THEN
            EXIT;
        END IF;
        -- Puts into one group take turns, to the end of their transactions: the count below then
        -- sees every earlier put into the group and none of the later ones.
        PERFORM pg_advisory_xact_lock(p_lock);
        IF p_version IS NULL THEN
            INSERT INTO {{members}} AS m (run_id, node, group_name, value, incarnation)
            VALUES (p_run_id, p_node, p_group, p_value, p_new_incarnation)
            ON CONFLICT (run_id, node) DO NOTHING
            RETURNING {_record('m')} INTO cur;
        ELSE
            -- Waits for a concurrent writer of the row and re-checks against what it committed.
            UPDATE {{members}} AS m
            SET group_name = p_group, value = p_value, version = DEFAULT, seq = DEFAULT,
                written_at = clock_timestamp()
            WHERE m.run_id = p_run_id AND m.node = p_node AND m.version = p_version
              AND m.incarnation = p_incarnation AND {_valid('m')}
            RETURNING {_record('m')} INTO cur;
        END IF;
        IF FOUND THEN
            RETURN QUERY SELECT true,
                (SELECT count(*) FROM {{members}} AS c
                 WHERE c.run_id = p_run_id AND c.group_name = p_group),
                cur.group_name, cur.value, cur.incarnation, cur.version, cur.seq, cur.age,
                cur.valid;
            RETURN;
        END IF;
        -- Lost to a concurrent writer: read what it committed (a create whose rival has gone
        -- since tries again).
    END LOOP;
    IF seen THEN
        RETURN QUERY SELECT false, 0::bigint, cur.group_name, cur.value, cur.incarnation,
            cur.version, cur.seq, cur.age, cur.valid;
    END IF;
END
$put$"""
"""The member table's definition: a sequence, the table, an index and the put function.

``{members}``, ``{sequence}`` and ``{put}`` are quoted (schema-qualified) names and ``{index}``
a quoted bare one; :func:`create_members_sql` fills them in for a backend's ``table`` option.
A DBA may run it ahead of time (then the role using the backend needs ``SELECT``, ``INSERT``,
``UPDATE`` and ``DELETE`` on the table, ``USAGE`` on the sequence and ``EXECUTE`` on the
function, which PostgreSQL grants to everyone by default)."""


class MemberNames(NamedTuple):
    """The names of the member table's objects for one ``table`` option."""

    members: str
    """The table, quoted (and schema-qualified if the state table is)."""
    sequence: str
    """Its sequence, quoted like the table."""
    group_index: str
    """Its index on ``(run_id, group_name, seq)``, quoted, bare (an index lives in its table's
    schema)."""
    put: str
    """The put function, quoted like the table."""
    put_signature: str
    """The put function with its argument types, for ``to_regprocedure``."""
    plain: str
    """The table, unquoted: as the errors and the docs name it."""


def _derived(name: str, suffix: str) -> str:
    """*name* with *suffix*, kept within PostgreSQL's 63 bytes (which would silently truncate a
    longer one, so that two long names could meet): a long *name* ends in a hash of itself."""
    if len(name) + len(suffix) <= _MAX_IDENTIFIER_BYTES:
        return name + suffix
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: _MAX_IDENTIFIER_BYTES - len(suffix) - 9]}_{digest}{suffix}"


def member_names(table: str) -> MemberNames:
    """The member table's object names for the state table *table* (``NAME`` or
    ``SCHEMA.NAME``, validated already): ``NAME_members``, ``NAME_members_seq``,
    ``NAME_members_group`` and ``NAME_members_put`` in the same schema, each ending in a hash of
    ``NAME`` instead when it would be longer than 63 bytes."""
    schema, _, name = table.rpartition(".")
    prefix = f'"{schema}".' if schema else ""

    def quoted(suffix: str) -> str:
        return f'{prefix}"{_derived(name, suffix)}"'

    members = quoted("_members")
    put = quoted("_members_put")
    return MemberNames(
        members=members,
        sequence=quoted("_members_seq"),
        group_index=f'"{_derived(name, "_members_group")}"',
        put=put,
        put_signature=f"{put}(text, text, text, bytea, bytea, bigint, bytea, bigint)",
        plain=members.replace('"', ""),
    )


def create_members_sql(table: str = DEFAULT_TABLE) -> str:
    """:data:`CREATE_MEMBERS_SQL` for a backend's ``table`` option: what the backend runs (under
    an advisory lock) when the member table is missing, and what a DBA may run ahead of time.

    :raises TypeError: *table* is not a ``str``.
    :raises ValueError: *table* is not a name the backend accepts.
    """
    return MemberStatements(quote_table(table)[1]).create


def group_lock_key(members: str, run_id: str, group: str) -> int:
    """The advisory lock that puts into one group of one run take turns on (a signed 64-bit
    hash: two groups that share a key merely take turns too)."""
    name = f"arendezvous members\0{members}\0{run_id}\0{group}".encode()
    return int.from_bytes(hashlib.sha256(name).digest()[:8], "big", signed=True)


class MemberStatements:
    """The SQL of one member table. Every operation is one statement: one round trip, one
    transaction."""

    def __init__(self, table: str) -> None:
        names = self.names = member_names(table)
        members = names.members
        self.create = CREATE_MEMBERS_SQL.format(
            members=members, sequence=names.sequence, index=names.group_index, put=names.put
        )
        self.exists = "SELECT to_regclass($1) IS NOT NULL AND to_regprocedure($2) IS NOT NULL"
        self.get = f"SELECT {_record('m')} FROM {members} AS m WHERE m.run_id = $1 AND m.node = $2"
        self.members = (
            f"SELECT m.node, {_record('m')} FROM {members} AS m "
            "WHERE m.run_id = $1 AND m.group_name = $2 ORDER BY m.seq"
        )
        self.count = f"SELECT count(*) FROM {members} WHERE run_id = $1 AND group_name = $2"
        self.put = f"SELECT * FROM {names.put}($1, $2, $3, $4, $5, $6, $7, $8)"
        # A write that does not apply returns the current row too (its NOT EXISTS is a one-time
        # filter, so a winner reads nothing more): a corrupt row is reported, not taken for a
        # lost one.
        self.touch = f"""\
WITH touched AS (
    UPDATE {members} AS m SET version = DEFAULT, written_at = clock_timestamp()
    WHERE m.run_id = $1 AND m.node = $2 AND m.version = $3 AND m.incarnation = $4
      AND {_valid('m')}
    RETURNING {_record('m')}
)
SELECT true AS written, * FROM touched
UNION ALL
SELECT false, {_record('m')} FROM {members} AS m
WHERE m.run_id = $1 AND m.node = $2 AND NOT EXISTS (SELECT FROM touched)"""
        self.delete = f"""\
WITH deleted AS (
    DELETE FROM {members} AS m
    WHERE m.run_id = $1 AND m.node = $2 AND m.version = $3 AND m.incarnation = $4
      AND {_valid('m')}
    RETURNING m.node
)
SELECT true AS written, true AS valid FROM deleted
UNION ALL
SELECT false, {_valid('m')} FROM {members} AS m
WHERE m.run_id = $1 AND m.node = $2 AND NOT EXISTS (SELECT FROM deleted)"""
