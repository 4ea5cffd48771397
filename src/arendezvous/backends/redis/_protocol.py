"""What the Redis backend stores and sends: the hash's layout, the Lua scripts, tokens, errors."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cache
from typing import Any

from ..._errors import ErrorRule, ErrorTable, RendezvousStateError

__all__ = (
    "DELETE_RUN_SCRIPT",
    "DELETE_RUN_SHA",
    "FORMAT",
    "LIST_RUNS_SCRIPT",
    "LIST_RUNS_SHA",
    "MAX_STATE_SIZE_LIMIT",
    "NO_INCARNATION",
    "SET_STATE_SCRIPT",
    "SET_STATE_SHA",
    "RedisToken",
    "decode_token",
    "error_table",
    "sendable",
)

MAX_STATE_SIZE_LIMIT = 512 * 1024 * 1024
"""Redis refuses strings and arguments over ``proto-max-bulk-len`` (512 MiB by default)."""

FORMAT = b"arendezvous/1"
"""The ``format`` field of every hash this backend writes; anything else is not ours."""

SET_STATE_SCRIPT = """
-- KEYS[1]: the run's hash, whose name is also the name of its change channel. KEYS[2]: the run's
-- member hash (only its expiry is touched).
-- ARGV[1]: the new state. ARGV[2]: '1' if the caller holds a token, '0' for None.
-- ARGV[3], ARGV[4]: the token's incarnation and counter; with no token, ARGV[3] is a fresh
-- incarnation for the hash this call may create. ARGV[5]: this call's writer id.
-- ARGV[6]: the run's expiry in milliseconds, refreshed on both keys by a write; '0': none.
-- Reply: {1, incarnation, counter} written; {0, incarnation, counter, state} not written;
-- {0} no state exists; {-1, reason} the key holds something that is not ours.
if redis.replicate_commands then
  redis.replicate_commands() -- TIME, then writes: Redis 3.2 and 4 need this; 5+ do it anyway
end
local key = KEYS[1]
-- The time of a write, in microseconds of the server's TIME: what list_runs tells ages by.
local function now()
  local t = redis.call('TIME')
  return string.format('%.0f', tonumber(t[1]) * 1000000 + tonumber(t[2]))
end
-- Every write pushes the whole run's expiry back, the member hash's too (a missing key is left).
local function refresh()
  if ARGV[6] ~= '0' then
    redis.call('PEXPIRE', key, ARGV[6])
    redis.call('PEXPIRE', KEYS[2], ARGV[6])
  end
end
local kind = redis.call('TYPE', key)['ok']
if kind == 'none' then
  if ARGV[2] == '1' then
    return {0}
  end
  redis.call('HSET', key, 'format', 'arendezvous/1', 'incarnation', ARGV[3], 'counter', '1',
             'state', ARGV[1], 'writer', ARGV[5], 'written', now())
  refresh()
  redis.call('PUBLISH', key, ARGV[3] .. ':1')
  return {1, ARGV[3], 1}
end
if kind ~= 'hash' then
  return {-1, 'the key holds a ' .. kind .. ', not a hash'}
end
local f = redis.call('HMGET', key, 'format', 'incarnation', 'counter', 'state', 'writer')
if f[1] ~= 'arendezvous/1' then
  return {-1, 'the hash has no arendezvous/1 format field'}
end
if not (f[2] and f[3] and f[4]) or #f[2] ~= 32 or not string.match(f[2], '^[0-9a-f]+$')
    or #f[3] > 18 or not string.match(f[3], '^[1-9][0-9]*$') then
  return {-1, 'the hash has a missing or malformed field'}
end
if ARGV[2] == '1' and f[2] == ARGV[3] and f[3] == ARGV[4] then
  local counter = redis.call('HINCRBY', key, 'counter', 1)
  redis.call('HSET', key, 'state', ARGV[1], 'writer', ARGV[5], 'written', now())
  refresh()
  redis.call('PUBLISH', key, f[2] .. ':' .. counter)
  return {1, f[2], counter}
end
if f[5] == ARGV[5] then
  -- This very call wrote already: a client retried it after losing the reply.
  return {1, f[2], f[3]}
end
return {0, f[2], f[3], f[4]}
"""
"""The compare-and-swap, as run by ``EVALSHA`` (``EVAL`` when the server lacks it: NOSCRIPT)."""

SET_STATE_SHA = hashlib.sha1(SET_STATE_SCRIPT.encode()).hexdigest()
"""The script's SHA-1, the name ``EVALSHA`` runs it by."""

DELETE_RUN_SCRIPT = """
-- KEYS[1]: the run's hash (and change channel). KEYS[2]: its member hash.
-- Reply: how many of the two keys existed. Both go in one step: no reader ever sees one without
-- the other gone too. The notice makes waiters re-read and see the state gone.
local deleted = redis.call('DEL', KEYS[1], KEYS[2])
if deleted > 0 then
  redis.call('PUBLISH', KEYS[1], 'deleted')
end
return deleted
"""
"""``delete_run()``: both keys of a run in one script, so the deletion is one atomic step."""

DELETE_RUN_SHA = hashlib.sha1(DELETE_RUN_SCRIPT.encode()).hexdigest()
"""The script's SHA-1, the name ``EVALSHA`` runs it by."""

LIST_RUNS_SCRIPT = r"""
-- KEYS: for each run, its state hash and then its member hash. Reads only.
-- Reply: {now, then four numbers per run: size, written, records, members_written}: times in
-- microseconds of the server's TIME, -1 when none is recorded; size -1 when the run has no state
-- hash of ours; records -1 for a member table of ours that does not count its records, -2 when
-- there is no member table of ours. Keys that are not ours are left alone, never an error.
local t = redis.call('TIME')
local reply = {tonumber(t[1]) * 1000000 + tonumber(t[2])}
local function time_of(text)
  if text and #text <= 16 and string.match(text, '^[1-9]%d*$') then
    return tonumber(text)
  end
  return -1
end
for i = 1, #KEYS, 2 do
  local size, written, records, members_written = -1, -1, -2, -1
  if redis.call('TYPE', KEYS[i])['ok'] == 'hash' then
    local f = redis.call('HMGET', KEYS[i], 'format', 'written')
    if f[1] == 'arendezvous/1' then
      size = redis.call('HSTRLEN', KEYS[i], 'state')
      written = time_of(f[2])
    end
  end
  if redis.call('TYPE', KEYS[i + 1])['ok'] == 'hash' then
    local f = redis.call('HMGET', KEYS[i + 1], '\0format', '\0records', '\0written')
    if f[1] == 'arendezvous-members/1' then
      records = -1
      if f[2] and #f[2] <= 15 and string.match(f[2], '^%d+$') then
        records = tonumber(f[2])
      end
      members_written = time_of(f[3])
    end
  end
  local n = #reply
  reply[n + 1], reply[n + 2], reply[n + 3], reply[n + 4] = size, written, records, members_written
end
return reply
"""
"""``list_runs()``: what is known of a batch of runs found by ``SCAN``, in one script."""

LIST_RUNS_SHA = hashlib.sha1(LIST_RUNS_SCRIPT.encode()).hexdigest()
"""The script's SHA-1, the name ``EVALSHA`` runs it by."""

NO_INCARNATION = b""
"""Sent for a token that is not ours: never stored (incarnations are 32 hex digits), so it
matches nothing."""

_INCARNATION = re.compile(rb"[0-9a-f]{32}")
_INCARNATION_TEXT = re.compile(r"[0-9a-f]{32}")
_COUNTER = re.compile(rb"[1-9][0-9]{0,17}")


@dataclass(frozen=True, slots=True)
class RedisToken:
    """A Redis backend's token: the hash's incarnation and its write counter.

    Tokens are values: two reads of the same write give equal tokens. A token equals only a
    ``RedisToken`` (never a ``str``, ``int`` or tuple), and one from another run, another
    incarnation of the run or another server never matches, short of a 128-bit collision.
    """

    incarnation: str
    counter: int


def sendable(token: object) -> bool:
    """Whether *token* is a ``RedisToken`` whose fields a stored token could have.

    The caller's token is untrusted: exact types are checked before anything reads it, and fields
    no stored token can have (a lone surrogate, an int of thousands of digits) make it merely
    stale instead of failing to encode.
    """
    return (
        type(token) is RedisToken
        and type(token.incarnation) is str
        and type(token.counter) is int
        and 0 < token.counter < 10**18
        and _INCARNATION_TEXT.fullmatch(token.incarnation) is not None
    )


def decode_token(incarnation: object, counter: object) -> RedisToken:
    """The token of stored fields.

    :raises RendezvousStateError: they are not what this backend writes.
    """
    if (
        isinstance(incarnation, bytes)
        and _INCARNATION.fullmatch(incarnation)
        and isinstance(counter, bytes)
        and _COUNTER.fullmatch(counter)
    ):
        return RedisToken(incarnation.decode("ascii"), int(counter))
    raise RendezvousStateError("the stored incarnation or counter is malformed")


@cache
def error_table(errors: Any) -> ErrorTable:
    """redis-py's exceptions (the module *errors*) and ours."""
    return (
        ErrorRule((TimeoutError, errors.TimeoutError), detail="no answer within {timeout:g} s"),
        ErrorRule(
            (errors.ResponseError,),
            RendezvousStateError,
            detail="the key holds something that is not an arendezvous state (WRONGTYPE)",
            when=lambda exc: str(exc).startswith("WRONGTYPE"),
        ),
        ErrorRule((errors.RedisError, OSError)),
    )
