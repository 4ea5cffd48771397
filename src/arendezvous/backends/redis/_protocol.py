"""What the Redis backend stores and sends: the hash's layout, the Lua script, tokens, errors."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cache
from typing import Any

from ..._errors import ErrorRule, ErrorTable, RendezvousStateError

__all__ = (
    "FORMAT",
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
-- KEYS[1]: the run's hash, whose name is also the name of its change channel.
-- ARGV[1]: the new state. ARGV[2]: '1' if the caller holds a token, '0' for None.
-- ARGV[3], ARGV[4]: the token's incarnation and counter; with no token, ARGV[3] is a fresh
-- incarnation for the hash this call may create. ARGV[5]: this call's writer id.
-- Reply: {1, incarnation, counter} written; {0, incarnation, counter, state} not written;
-- {0} no state exists; {-1, reason} the key holds something that is not ours.
local key = KEYS[1]
local kind = redis.call('TYPE', key)['ok']
if kind == 'none' then
  if ARGV[2] == '1' then
    return {0}
  end
  redis.call('HSET', key, 'format', 'arendezvous/1', 'incarnation', ARGV[3], 'counter', '1',
             'state', ARGV[1], 'writer', ARGV[5])
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
  redis.call('HSET', key, 'state', ARGV[1], 'writer', ARGV[5])
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
