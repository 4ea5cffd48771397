"""The Redis backend's member table: one hash per run beside its state, one Lua script.

A run's member records live in the hash ``<state key>\\x00members`` (run ids contain no NUL, so
the name never is another run's state key or member key). Each node is one field, named by its
node id, holding the packed record::

    <version> <seq> <written> <group>\\x00<value>

-- the version number, the seq and the time of the last put or touch in microseconds of the
server's ``TIME``, in decimal; then the group (which contains no NUL) and the value's bytes. Fields
whose names start with NUL are the table's own (node ids contain no NUL either):

==================  ============================================================================
``\\x00format``      ``arendezvous-members/1``; anything else under the key is not ours
``\\x00incarnation`` 32 hex digits drawn by the writer that created the hash: a table deleted
                    and created again never repeats a version
``\\x00counter``     the last number handed out; every put and touch takes the next one (a put's
                    is its version and its seq, a touch's its version)
``\\x00size:<g>``    how many records group *g* holds (the field is gone at zero): a put reads
                    and writes it in the same script as the record, so the size it returns is
                    counted atomically with the write, and ``count`` reads one field
``\\x00records``    how many records the table holds, for ``list_runs`` (a table made before
                    this field was kept lacks it, and its count is then unknown)
``\\x00written``    the time of the table's last put, touch or delete, in microseconds of the
                    server's ``TIME``: with the state hash's ``written``, a run's age
==================  ============================================================================

Every operation is one ``EVALSHA`` of :data:`MEMBER_TABLE_SCRIPT` (``EVAL`` when the server has
lost it), with the operation's name as its first argument. Redis runs a script to the end before
serving anything else, so there is no ``WATCH``/``MULTI`` retry loop, and a call cancelled at any
point ran entirely or not at all. Every reading operation computes ages inside the script, from
the server's ``TIME`` then and the record's time of writing: the server's clock alone, never a
client's. Nothing is published: a heartbeat wakes nobody.

Every write also pushes back the expiry of both of the run's hashes when the handle has an
``expire_after`` (``PEXPIRE``), so that a heartbeat keeps its whole run alive.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from ..._backend import Token
from ..._errors import RendezvousStateError
from ..._members import (
    Member,
    MemberPut,
    MemberTable,
    check_group,
    check_member_value,
    check_node,
)
from ._protocol import RedisToken, sendable

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from ._backend import RedisBackend

__all__ = (
    "MEMBERS_FORMAT",
    "MEMBER_TABLE_SCRIPT",
    "MEMBER_TABLE_SHA",
    "RedisMemberTable",
    "RedisMemberVersion",
    "member_key",
)

MEMBERS_FORMAT: Final = b"arendezvous-members/1"
"""The ``\\x00format`` field of every member hash this backend writes."""

MEMBER_TABLE_SCRIPT: Final = r"""
-- KEYS[1]: a run's member hash. KEYS[2]: the run's state hash (only its expiry is touched).
-- ARGV[1]: the operation. ARGV[2]: the run's expiry in milliseconds, which every write pushes
-- back on both keys ('0': none). ARGV[3...]: the operation's arguments (A[1...] below); they and
-- the reply are given with each operation.
-- Every reply starts with a status: 1 done or found; 0 not done (no record, or a version that is
-- not current); {-1, reason}: the key holds something that is not a member table. Everything a
-- write depends on is read and checked before its first write, so a corrupt hash stays as it is.
-- A record (field = node id): '<version> <seq> <written> <group>\0<value>', <written> in
-- microseconds of the server's TIME. A record as replied: group, value, version, seq, age (us).
if redis.replicate_commands then
  redis.replicate_commands() -- TIME, then writes: Redis 3.2 and 4 need this; 5+ do it anyway
end
local key, op, ttl = KEYS[1], ARGV[1], ARGV[2]
local A = {unpack(ARGV, 3)}
local FORMAT = 'arendezvous-members/1'

local function corrupt(reason)
  error({members_corrupt = reason})
end

-- The hash's fields '\0format', '\0incarnation' and then the ones asked for (nil for a missing
-- key, after checking that the hash is a member table).
local function load(...)
  local kind = redis.call('TYPE', key)['ok']
  if kind == 'none' then
    return nil
  end
  if kind ~= 'hash' then
    corrupt('the key holds a ' .. kind .. ', not a hash')
  end
  local f = redis.call('HMGET', key, '\0format', '\0incarnation', ...)
  if f[1] ~= FORMAT then
    corrupt('the hash has no ' .. FORMAT .. ' format field')
  end
  if not f[2] or #f[2] ~= 32 or not string.match(f[2], '^[0-9a-f]+$') then
    corrupt('the table\'s incarnation is missing or malformed')
  end
  return f
end

-- A group's size: none stored means 0; a stored one is at least 1 (a size that reaches 0 is
-- deleted), decimal without leading zeros, exact in Lua's doubles.
local function size_of(text)
  if not text then
    return 0
  end
  if #text > 15 or not string.match(text, '^[1-9]%d*$') then
    corrupt('a group size is malformed')
  end
  return tonumber(text)
end

-- HINCRBY would fail on a malformed counter after earlier writes of the same call.
local function check_counter(text)
  if not text or #text > 15 or not (text == '0' or string.match(text, '^[1-9]%d*$')) then
    corrupt('the table\'s counter is missing or malformed')
  end
end

local function decimal(n)
  return string.format('%.0f', n)
end

-- Whether text is UTF-8 as Python's strict decoder takes it (no overlong forms, surrogates or
-- code points past U+10FFFF): a group the client could not decode must not be written over.
local function utf8(text)
  if not string.find(text, '[\128-\255]') then
    return true
  end
  local i, n = 1, #text
  while i <= n do
    local c = string.byte(text, i)
    local length, low, high = 1, 0x80, 0xBF
    if c >= 0xC2 and c <= 0xDF then
      length = 2
    elseif c >= 0xE0 and c <= 0xEF then
      length = 3
      if c == 0xE0 then low = 0xA0 elseif c == 0xED then high = 0x9F end
    elseif c >= 0xF0 and c <= 0xF4 then
      length = 4
      if c == 0xF0 then low = 0x90 elseif c == 0xF4 then high = 0x8F end
    elseif c >= 0x80 then
      return false
    end
    for j = i + 1, i + length - 1 do
      local d = string.byte(text, j)
      if not d or d < low or d > high then
        return false
      end
      low, high = 0x80, 0xBF
    end
    i = i + length
  end
  return true
end

-- version, seq, written (a number), group, and where the value starts.
local function parse(raw)
  local _, stop, version, seq, written, group =
    string.find(raw, '^([1-9]%d*) ([1-9]%d*) ([1-9]%d*) ([^%z]+)%z')
  if not stop or #version > 15 or #seq > 15 or #written > 16 or not utf8(group) then
    corrupt('a member record is malformed')
  end
  return version, seq, tonumber(written), group, stop + 1
end

local function pack(version, seq, written, group, value)
  return version .. ' ' .. seq .. ' ' .. decimal(written) .. ' ' .. group .. '\0' .. value
end

local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

local function age(written, at)
  if written > at then
    return 0 -- written before the server's clock was set back: never a negative age
  end
  return at - written
end

local function shown(raw, at)
  local version, seq, written, group, start = parse(raw)
  return group, string.sub(raw, start), version, seq, age(written, at)
end

-- The table's count of records (none in a table made before it was kept: then it stays so).
local function records_of(text)
  if text and (#text > 15 or not string.match(text, '^%d+$') or
               (#text > 1 and string.byte(text, 1) == 48)) then
    corrupt('the table\'s count of records is malformed')
  end
  return text
end

-- After every write: the time of the table's last write (what list_runs tells a run's age by),
-- and the whole run's expiry pushed back, the state hash's too (a missing key is left).
local function wrote(at, records)
  if records then
    redis.call('HSET', key, '\0written', decimal(at), '\0records', decimal(records))
  else
    redis.call('HSET', key, '\0written', decimal(at))
  end
  if ttl ~= '0' then
    redis.call('PEXPIRE', key, ttl)
    redis.call('PEXPIRE', KEYS[2], ttl)
  end
end

local function resize(group, size)
  if size == 0 then
    redis.call('HDEL', key, '\0size:' .. group)
  else
    redis.call('HSET', key, '\0size:' .. group, decimal(size))
  end
end

local operations = {}

-- get node -> {1, incarnation, record} | {0}
function operations.get()
  local f = load(A[1])
  if not (f and f[3]) then
    return {0}
  end
  return {1, f[2], shown(f[3], now())}
end

-- count group -> {1, size}
function operations.count()
  local f = load('\0size:' .. A[1])
  return {1, f and size_of(f[3]) or 0}
end

-- members group -> {1, incarnation, node, value, version, seq, age, node, ...} (any order)
function operations.members()
  local f = load()
  if not f then
    return {1, ''}
  end
  local fields = redis.call('HGETALL', key)
  local at = now()
  local reply = {1, f[2]}
  for i = 1, #fields, 2 do
    local node = fields[i]
    if string.byte(node, 1) ~= 0 then
      local raw = fields[i + 1]
      local version, seq, written, group, start = parse(raw)
      if group == A[1] then
        local n = #reply
        reply[n + 1] = node
        reply[n + 2] = string.sub(raw, start)
        reply[n + 3] = version
        reply[n + 4] = seq
        reply[n + 5] = age(written, at)
      end
    end
  end
  return reply
end

-- put node group value has_version incarnation number (with has_version '0', incarnation is a
-- fresh one for the hash this call may create) -> {1, incarnation, number, group size} |
-- {0, incarnation, current record} | {0}
function operations.put()
  local node, group, value = A[1], A[2], A[3]
  local f = load('\0counter', node, '\0size:' .. group, '\0records')
  local current = f and f[4]
  local at = now()
  local old_group, old_size
  if current then
    local version, _, _, group_now = parse(current)
    old_group = group_now
    if A[4] == '0' or f[2] ~= A[5] or version ~= A[6] then
      return {0, f[2], shown(current, at)}
    end
  elseif A[4] == '1' then
    return {0}
  end
  local incarnation = f and f[2] or A[5]
  local size = f and size_of(f[5]) or 0
  -- The table's new count of records, if this put adds one and the table keeps the count (a
  -- new table does from the start; one made without it stays without).
  local records
  if not current then
    local counted = f and records_of(f[6]) or (not f and '0')
    if counted then
      records = tonumber(counted) + 1
    end
  end
  if current then
    if old_group == group then
      old_group = nil
      if size < 1 then
        corrupt('a group size is inconsistent with its records')
      end
    else
      old_size = size_of(redis.call('HGET', key, '\0size:' .. old_group))
      if old_size < 1 then
        corrupt('a group size is inconsistent with its records')
      end
      size = size + 1
    end
  else
    size = size + 1
  end
  if f then
    check_counter(f[3])
  else
    redis.call('HSET', key, '\0format', FORMAT, '\0incarnation', incarnation, '\0counter', '0')
  end
  local n = decimal(redis.call('HINCRBY', key, '\0counter', 1))
  redis.call('HSET', key, node, pack(n, n, at, group, value))
  if old_group then
    resize(old_group, old_size - 1)
  end
  resize(group, size)
  wrote(at, records)
  return {1, incarnation, n, size}
end

-- touch node incarnation number -> {1, incarnation, number, seq, group, value} | {0}
function operations.touch()
  local node = A[1]
  local f = load('\0counter', node)
  local current = f and f[4]
  if not current then
    return {0}
  end
  local version, seq, _, group, start = parse(current)
  if f[2] ~= A[2] or version ~= A[3] then
    return {0}
  end
  check_counter(f[3])
  local at = now()
  local value = string.sub(current, start)
  local n = decimal(redis.call('HINCRBY', key, '\0counter', 1))
  redis.call('HSET', key, node, pack(n, seq, at, group, value))
  wrote(at)
  return {1, f[2], n, seq, group, value}
end

-- delete node incarnation number -> {1} | {0}
function operations.delete()
  local node = A[1]
  local f = load(node, '\0records')
  local current = f and f[3]
  if not current then
    return {0}
  end
  local version, _, _, group = parse(current)
  if f[2] ~= A[2] or version ~= A[3] then
    return {0}
  end
  local size = size_of(redis.call('HGET', key, '\0size:' .. group))
  local records = records_of(f[4])
  if size < 1 or records == '0' then
    corrupt('a group size is inconsistent with its records')
  end
  redis.call('HDEL', key, node)
  resize(group, size - 1)
  wrote(now(), records and tonumber(records) - 1)
  return {1}
end

local operation = operations[op]
if not operation then
  return redis.error_reply('unknown member table operation')
end
local ok, reply = pcall(operation)
if ok then
  return reply
end
if type(reply) == 'table' and reply.members_corrupt then
  return {-1, reply.members_corrupt}
end
error(reply)
"""
"""The member table's operations, as run by ``EVALSHA`` (``EVAL`` when the server lacks it)."""

MEMBER_TABLE_SHA: Final = hashlib.sha1(MEMBER_TABLE_SCRIPT.encode()).hexdigest()
"""The script's SHA-1, the name ``EVALSHA`` runs it by."""

_NOT_CURRENT: Final = ("", "0")
"""Sent for a version that is not ours: no table has this incarnation, no record this number."""


def member_key(state_key: bytes) -> bytes:
    """The key of the member hash of the run whose state hash is *state_key*."""
    return state_key + b"\x00members"


@dataclass(frozen=True, slots=True)
class RedisMemberVersion:
    """A record's version in a Redis member table: the table's incarnation and a number.

    Versions are values: two reads of the same write give equal versions. A version equals only
    a ``RedisMemberVersion`` (never a state's :class:`RedisToken`, a ``str`` or a tuple), and one
    from another run, another incarnation of the table or another server never matches, short of
    a 128-bit collision.
    """

    incarnation: str
    number: int


def _sent(version: object) -> tuple[str, str]:
    """The incarnation and number to send for a caller's *version*.

    The version is untrusted: its exact type is checked before any field is read, and its fields
    by a state token's rules (the same fields, so the same check), so nothing of the caller's
    runs and nothing fails to encode. One that is not ours is sent as :data:`_NOT_CURRENT`,
    which the script finds not current, like a stale version.
    """
    if type(version) is RedisMemberVersion and sendable(
        RedisToken(version.incarnation, version.number)
    ):
        return version.incarnation, str(version.number)
    return _NOT_CURRENT


class RedisMemberTable(MemberTable):
    """A run's member records in Redis (see the module docstring for the layout).

    Obtained from :meth:`RedisBackend.member_table`; it uses the handle's client (on asyncio or,
    bridged, on trio), its timeout and its error messages, and closes with it. Every call is one
    round trip (one script); ages are measured by the server's clock (``has_clock``). Costs:
    ``get``, ``count``, ``put``, ``touch`` and ``delete`` are O(1) on the server; ``members``
    scans the run's hash, O(records), and returns only the group's, in ``seq`` order.
    """

    has_clock = True

    def __init__(self, backend: RedisBackend) -> None:
        self._backend = backend
        self._key = member_key(backend.key)

    @property
    def key(self) -> bytes:
        """The Redis key of the run's member hash."""
        return self._key

    def __repr__(self) -> str:
        return f"RedisMemberTable(run_id={self._backend.run_id!r}, key={self._key!r})"

    async def _run(self, operation: str, *arguments: object) -> Any:
        """One run of the script, on the handle's client; a ``-1`` reply is corrupt data."""
        reply = await self._backend._on_client(self._evaluate, operation, arguments)
        if reply[0] == -1:
            reason = reply[1].decode("utf-8", "replace")
            raise RendezvousStateError(
                f"{self._backend._what('member ' + operation)}: {reason} (key {self._key!r})"
            )
        return reply

    def _evaluate(
        self, client: Redis, operation: str, arguments: tuple[object, ...]
    ) -> Awaitable[Any]:
        backend = self._backend
        return backend._run_script(
            client, "member " + operation, MEMBER_TABLE_SCRIPT, MEMBER_TABLE_SHA,
            2, self._key, backend.key, operation, backend._expiry_ms, *arguments,
        )

    @staticmethod
    def _member(
        node: str, incarnation: bytes, group: bytes, value: bytes, number: bytes, seq: bytes,
        age: int,
    ) -> Member:
        """A record from the script's reply (which checked its layout, numbers and UTF-8)."""
        return Member(
            node, group.decode(), value,
            RedisMemberVersion(incarnation.decode("ascii"), int(number)), int(seq), age / 1e6,
        )

    async def get(self, node: str) -> Member | None:
        check_node(node)
        reply = await self._run("get", node)
        if reply[0] == 0:
            return None
        return self._member(node, *reply[1:])

    async def members(self, group: str) -> list[Member]:
        check_group(group)
        reply = await self._run("members", group)
        incarnation = reply[1].decode("ascii")
        found: list[Member] = []
        for index in range(2, len(reply), 5):
            field, value, number, seq, age = reply[index:index + 5]
            try:
                node = field.decode()
            except UnicodeDecodeError:
                raise RendezvousStateError(
                    f"{self._backend._what('member members')}: a node id is not UTF-8 "
                    f"({field!r}, key {self._key!r})"
                ) from None
            found.append(Member(node, group, value, RedisMemberVersion(incarnation, int(number)),
                                int(seq), age / 1e6))
        found.sort(key=lambda member: member.seq)
        return found

    async def count(self, group: str) -> int:
        check_group(group)
        reply = await self._run("count", group)
        size: int = reply[1]
        return size

    async def put(
        self, node: str, group: str, value: bytes, version: Token | None
    ) -> MemberPut:
        check_node(node)
        check_group(group)
        value = check_member_value(value)
        if version is None:
            has_version, (incarnation, number) = b"0", (os.urandom(16).hex(), "0")
        else:
            has_version, (incarnation, number) = b"1", _sent(version)
        reply = await self._run("put", node, group, value, has_version, incarnation, number)
        if reply[0] == 1:
            _, stored, written, size = reply
            new = RedisMemberVersion(stored.decode("ascii"), int(written))
            return MemberPut(Member(node, group, value, new, new.number, 0.0), True, size)
        if len(reply) == 1:
            return MemberPut(None, False, 0)
        return MemberPut(self._member(node, *reply[1:]), False, 0)

    async def touch(self, node: str, version: Token) -> Member | None:
        check_node(node)
        reply = await self._run("touch", node, *_sent(version))
        if reply[0] == 0:
            return None
        _, incarnation, number, seq, group, value = reply
        return self._member(node, incarnation, group, value, number, seq, 0)

    async def delete(self, node: str, version: Token) -> bool:
        check_node(node)
        reply = await self._run("delete", node, *_sent(version))
        return bool(reply[0] == 1)
