"""What the PostgreSQL member table stores and sends: its objects, their names and statements.

Beside the state table ``<table>`` live ``<table>_members`` (one row per node of a run), the
sequence its versions and seqs come from, an index on ``(run_id, group_name, seq)``, the function
``<table>_members_put`` that does a put in one round trip, and what the run lifecycle adds: the
function ``<table>_purge`` that deletes a run (its state row and member rows) in one
transaction, and an index of the state rows that expire (see :data:`CREATE_MEMBERS_SQL`). The
statements about whole runs (listing, the clean-up of expired runs) are here too: they read
both tables.
"""

from __future__ import annotations

import hashlib
from typing import Final, NamedTuple

from ..._members import MAX_GROUP_LENGTH, MAX_MEMBER_VALUE, MAX_NODE_LENGTH
from ._sql import DEFAULT_TABLE, alive_sql, expiry_sql, quote_table

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

# Each statement of a VOLATILE function reads a fresh snapshot under READ COMMITTED, so a
# statement after a lock sees everything committed before it was granted. Under a stricter
# level all would share the first one: the functions refuse rather than miscount.
_READ_COMMITTED_ONLY = """\
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'the arendezvous member table needs READ COMMITTED transactions, '
                        'not %', upper(current_setting('transaction_isolation'))
            USING ERRCODE = 'invalid_transaction_state';
    END IF;"""

# Whether the run of the functions' p_run_id lives; {{state}} and {{members}} are filled in
# with the tables' names when the script is.
_ALIVE = alive_sql("{state}", "{members}", "p_run_id")


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
    -- When the row expires ('infinity' unless written by a handle with expire_after): the run
    -- lives while its state row or one of its member rows has not expired.
    expires_at timestamptz NOT NULL DEFAULT 'infinity',
    PRIMARY KEY (run_id, node)
) WITH (fillfactor = 70);  -- room in each page, so a heartbeat's update stays in it (HOT)
-- Counts a group, and lists it in seq order without sorting; a heartbeat changes none of it
-- (expires_at is in no index, so a heartbeat's update stays HOT).
CREATE INDEX IF NOT EXISTS {{index}} ON {{members}} (run_id, group_name, seq);
-- The state rows that expire, soonest first: what the clean-up of expired runs looks at.
CREATE INDEX IF NOT EXISTS {{expiry_index}} ON {{state}} (expires_at)
    WHERE expires_at < 'infinity';
CREATE OR REPLACE FUNCTION {{purge}}(p_run_id text, p_channel text, p_mode text)
RETURNS bigint LANGUAGE plpgsql VOLATILE AS $purge$
-- Deletes run p_run_id, its state row and its member rows, in one transaction. p_mode: 'delete'
-- always; 'expired' only a run still expired once its lock is held; 'tidy' the same, passing
-- over a run whose lock another transaction holds. Unless p_channel is NULL, it is notified
-- when a state row went, so that the run's waiters look again. Returns the rows deleted.
#variable_conflict use_column
DECLARE
    states bigint;
    records bigint;
BEGIN
{_READ_COMMITTED_ONLY}
    -- Exclusive: every put of the run holds the lock shared to the end of its transaction, so
    -- a put, and the size of the group it counts, come wholly before the deletion or after it.
    IF p_mode = 'tidy' THEN
        IF NOT pg_try_advisory_xact_lock({{run_lock}}, hashtext(p_run_id)) THEN
            RETURN 0;
        END IF;
    ELSE
        PERFORM pg_advisory_xact_lock({{run_lock}}, hashtext(p_run_id));
    END IF;
    -- Looked at again once the lock is held, by a statement with a fresh snapshot: a run
    -- written meanwhile lives on.
    IF p_mode <> 'delete' AND {_ALIVE} THEN
        RETURN 0;
    END IF;
    DELETE FROM {{state}} WHERE run_id = p_run_id;
    GET DIAGNOSTICS states = ROW_COUNT;
    DELETE FROM {{members}} WHERE run_id = p_run_id;
    GET DIAGNOSTICS records = ROW_COUNT;
    IF states > 0 AND p_channel IS NOT NULL THEN
        PERFORM pg_notify(p_channel, 'deleted');
    END IF;
    RETURN states + records;
END
$purge$;
CREATE OR REPLACE FUNCTION {{put}}(
    p_run_id text, p_node text, p_group text, p_value bytea,
    p_incarnation bytea, p_version bigint, p_new_incarnation bytea, p_lock bigint,
    p_expire_after double precision
) RETURNS TABLE (
    written boolean, group_size bigint, group_name text, value bytea, incarnation bytea,
    version bigint, seq bigint, age double precision, valid boolean
) LANGUAGE plpgsql VOLATILE AS $put$
#variable_conflict use_column
DECLARE
    cur record;
    seen boolean := false;
BEGIN
{_READ_COMMITTED_ONLY}
    IF NOT {_ALIVE} THEN
        IF p_version IS NOT NULL THEN
            RETURN;  -- the record went with its expired run
        END IF;
        -- What an expired run left goes before a record joins it, or it would come back to
        -- life. (The purge takes the run's lock exclusively: before this put takes it shared.)
        IF EXISTS (SELECT FROM {{state}} AS s WHERE s.run_id = p_run_id)
           OR EXISTS (SELECT FROM {{members}} AS m WHERE m.run_id = p_run_id) THEN
            PERFORM {{purge}}(p_run_id, NULL, 'expired');
        END IF;
    END IF;
    -- Held to the end of the transaction: a deletion of the run waits for this put.
    PERFORM pg_advisory_xact_lock_shared({{run_lock}}, hashtext(p_run_id));
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
            INSERT INTO {{members}} AS m (run_id, node, group_name, value, incarnation,
                                          expires_at)
            VALUES (p_run_id, p_node, p_group, p_value, p_new_incarnation,
                    {expiry_sql("p_expire_after")})
            ON CONFLICT (run_id, node) DO NOTHING
            RETURNING {_record('m')} INTO cur;
        ELSE
            -- Waits for a concurrent writer of the row and re-checks against what it committed.
            UPDATE {{members}} AS m
            SET group_name = p_group, value = p_value, version = DEFAULT, seq = DEFAULT,
                written_at = clock_timestamp(), expires_at = {expiry_sql("p_expire_after")}
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
"""The member table's definition: a sequence, the table, its index, the state table's index of
expiring rows, and the purge and put functions.

``{state}``, ``{members}``, ``{sequence}``, ``{purge}`` and ``{put}`` are quoted
(schema-qualified) names, ``{index}`` and ``{expiry_index}`` quoted bare ones, ``{run_lock}``
the first key of the runs' advisory locks; :func:`create_members_sql` fills them in for a
backend's ``table`` option. A DBA may run it ahead of time, after :data:`CREATE_TABLE_SQL`
(then the role using the backend needs ``SELECT``, ``INSERT``, ``UPDATE`` and ``DELETE`` on
both tables, ``USAGE`` on the sequence and ``EXECUTE`` on the functions, which PostgreSQL grants
to everyone by default)."""


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
    state: str
    """The state table, quoted."""
    expiry_index: str
    """The state table's index of its expiring rows, quoted, bare."""
    purge: str
    """The function deleting a run, quoted like the table."""
    purge_signature: str
    """The purge function with its argument types, for ``to_regprocedure``."""
    run_lock: int
    """The first key of the runs' advisory locks (a 32-bit hash of the member table's name; a
    hash of the run id is the second): every put of a run holds its lock shared, a deletion of
    the run exclusively."""


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
    purge = quoted("_purge")
    digest = hashlib.sha256(f"arendezvous runs\0{members}".encode()).digest()
    return MemberNames(
        members=members,
        sequence=quoted("_members_seq"),
        group_index=f'"{_derived(name, "_members_group")}"',
        put=put,
        put_signature=(
            f"{put}(text, text, text, bytea, bytea, bigint, bytea, bigint, double precision)"
        ),
        plain=members.replace('"', ""),
        state=f'{prefix}"{name}"',
        expiry_index=f'"{_derived(name, "_expiry")}"',
        purge=purge,
        purge_signature=f"{purge}(text, text, text)",
        run_lock=int.from_bytes(digest[:4], "big", signed=True),
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
    """The SQL of one member table, and of the run lifecycle (which reads both tables). Every
    member operation is one statement: one round trip, one transaction.

    Every read and write of a record asks first whether its run lives (:func:`~._sql.alive_sql`,
    evaluated once per statement): the records of an expired run read as gone, and no write
    brings them back.
    """

    def __init__(self, table: str) -> None:
        names = self.names = member_names(table)
        members, state = names.members, names.state
        alive = alive_sql(state, members, "$1")
        self.create = CREATE_MEMBERS_SQL.format(
            members=members, sequence=names.sequence, index=names.group_index, put=names.put,
            state=state, expiry_index=names.expiry_index, purge=names.purge,
            run_lock=names.run_lock,
        )  # fmt: skip
        self.exists = "SELECT to_regclass($1) IS NOT NULL AND to_regprocedure($2) IS NOT NULL"
        self.get = (
            f"SELECT {_record('m')} FROM {members} AS m "
            f"WHERE m.run_id = $1 AND m.node = $2 AND {alive}"
        )
        self.members = (
            f"SELECT m.node, {_record('m')} FROM {members} AS m "
            f"WHERE m.run_id = $1 AND m.group_name = $2 AND {alive} ORDER BY m.seq"
        )
        self.count = (
            f"SELECT count(*) FROM {members} WHERE run_id = $1 AND group_name = $2 AND {alive}"
        )
        self.put = f"SELECT * FROM {names.put}($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        # A write that does not apply returns the current row too (its NOT EXISTS is a one-time
        # filter, so a winner reads nothing more): a corrupt row is reported, not taken for a
        # lost one.
        self.touch = f"""\
WITH touched AS (
    UPDATE {members} AS m SET version = DEFAULT, written_at = clock_timestamp(),
        expires_at = {expiry_sql("$5")}
    WHERE m.run_id = $1 AND m.node = $2 AND m.version = $3 AND m.incarnation = $4
      AND {_valid('m')} AND {alive}
    RETURNING {_record('m')}
)
SELECT true AS written, * FROM touched
UNION ALL
SELECT false, {_record('m')} FROM {members} AS m
WHERE m.run_id = $1 AND m.node = $2 AND NOT EXISTS (SELECT FROM touched) AND {alive}"""
        self.delete = f"""\
WITH deleted AS (
    DELETE FROM {members} AS m
    WHERE m.run_id = $1 AND m.node = $2 AND m.version = $3 AND m.incarnation = $4
      AND {_valid('m')} AND {alive}
    RETURNING m.node
)
SELECT true AS written, true AS valid FROM deleted
UNION ALL
SELECT false, {_valid('m')} FROM {members} AS m
WHERE m.run_id = $1 AND m.node = $2 AND NOT EXISTS (SELECT FROM deleted) AND {alive}"""
        # -- the run lifecycle --
        self.purge = f"SELECT {names.purge}($1, $2, $3)"
        # Expired runs, soonest first, through the index of expiring state rows; with $2, also
        # runs of member rows only (a scan of the member table: list_runs reads it all anyway).
        # Each is deleted only if its lock is free and it is still expired once it is held.
        self.tidy = f"""\
SELECT coalesce(sum({names.purge}(e.run_id, NULL, 'tidy')), 0)::bigint FROM (
    (SELECT s.run_id FROM {state} AS s
     WHERE s.expires_at < 'infinity' AND s.expires_at <= clock_timestamp()
       AND NOT EXISTS (SELECT FROM {members} AS o
                       WHERE o.run_id = s.run_id AND o.expires_at > clock_timestamp())
     ORDER BY s.expires_at LIMIT $1)
    UNION
    (SELECT v.run_id FROM {members} AS v
     WHERE $2 AND NOT EXISTS (SELECT FROM {state} AS s WHERE s.run_id = v.run_id)
     GROUP BY v.run_id HAVING max(v.expires_at) <= clock_timestamp() LIMIT $1)
) AS e"""
        # Every run of the table that lives: the state's size if its bytes start like ours
        # ($1, the header's start; $2, the header's size), its member records (valid ones), its
        # age by the server's clock since the last write of either.
        self.list_runs = f"""\
SELECT coalesce(s.run_id, m.run_id) AS run_id, s.size, coalesce(m.records, 0) AS records,
       date_part('epoch', clock_timestamp())
       - date_part('epoch', greatest(s.written_at, m.written_at)) AS age
FROM (SELECT run_id, written_at, expires_at,
             CASE WHEN substr(state, 1, octet_length($1::bytea)) = $1::bytea
                  THEN octet_length(state) - $2::int END
             AS size
      FROM {state}) AS s
FULL JOIN (SELECT v.run_id, count(*) AS records, max(v.written_at) AS written_at,
                  max(v.expires_at) AS expires_at
           FROM {members} AS v WHERE {_valid('v')} GROUP BY v.run_id) AS m
ON m.run_id = s.run_id
WHERE greatest(s.expires_at, m.expires_at) > clock_timestamp()
  AND (s.size IS NOT NULL OR m.records > 0)"""
