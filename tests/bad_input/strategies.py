"""Hypothesis strategies of bad input: states, tokens, forgeries, stored bytes, URLs."""

from __future__ import annotations

import copy
import dataclasses
import operator
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from arendezvous.backends.etcd import EtcdToken
from arendezvous.backends.memory import MemoryToken
from arendezvous.backends.postgres import PostgresToken
from arendezvous.backends.redis import RedisToken

from .objects import (
    BytesEqualsEverything,
    EqualsEverything,
    EtcdTokenEqualsEverything,
    Hostile,
    IntEqualsEverything,
    MemoryTokenEqualsEverything,
    PostgresTokenEqualsEverything,
    RedisTokenEqualsEverything,
    StrEqualsEverything,
    TupleEqualsEverything,
)

__all__ = (
    "OTHER_RUN",
    "REDIS_HASHES",
    "SCHEMES",
    "Forgery",
    "OddUrl",
    "bad_states",
    "forgeries",
    "garbage_tokens",
    "odd_urls",
    "raw_values",
)

_NO_SURROGATES = st.characters(exclude_categories=["Cs"])
_HEX32 = st.binary(min_size=16, max_size=16).map(bytes.hex)
_INT64 = st.integers(-(2**63), 2**63 - 1)

# A Redis token's fields well typed: the ones that are not are pinned by
# test_ill_typed_token_fields_are_stale (UnicodeEncodeError for surrogates, ValueError for an int
# of more than 4300 digits).
_REDIS_INCARNATIONS = _HEX32 | st.text(_NO_SURROGATES, max_size=40)
_REDIS_COUNTERS = st.integers(-(2**70), 2**70)

_SCALARS: st.SearchStrategy[Any] = st.one_of(
    st.text(max_size=40),
    st.binary(max_size=40),
    st.integers(),
    st.floats(),
    st.booleans(),
    st.complex_numbers(),
    st.just(Ellipsis),
    st.builds(object),
    st.binary(max_size=20).map(bytearray),
    st.binary(max_size=20).map(lambda raw: memoryview(raw)),
    st.frozensets(st.integers(), max_size=3),
)

_LOOKALIKES: st.SearchStrategy[Any] = st.one_of(
    st.builds(Hostile),
    st.builds(EqualsEverything),
    st.builds(StrEqualsEverything, st.text(max_size=10)),
    st.builds(BytesEqualsEverything, st.binary(max_size=10)),
    st.builds(IntEqualsEverything, st.integers()),
    st.builds(TupleEqualsEverything, st.lists(st.integers(), max_size=3)),
    st.builds(MemoryTokenEqualsEverything),
    st.builds(RedisTokenEqualsEverything, _HEX32, st.integers(1, 100)),
    st.builds(EtcdTokenEqualsEverything, st.integers(0, 2**64 - 1), st.binary(), _INT64),
    st.builds(PostgresTokenEqualsEverything, st.binary(max_size=16), _INT64),
)

# Tokens of every backend, well typed, as another backend or another run would hand them over.
_FOREIGN_TOKENS: st.SearchStrategy[Any] = st.one_of(
    st.builds(MemoryToken),
    st.builds(RedisToken, _REDIS_INCARNATIONS, _REDIS_COUNTERS),
    st.builds(EtcdToken, st.integers(0, 2**64 - 1), st.binary(max_size=40), _INT64),
    st.builds(PostgresToken, st.binary(max_size=20), _INT64),
    st.builds("{}-{}".format, _HEX32, st.integers(0)),
)


def garbage_tokens() -> st.SearchStrategy[Any]:
    """Anything but ``None``: scalars, containers (unhashable too), lookalikes, foreign tokens."""
    leaves = st.one_of(_SCALARS, _LOOKALIKES, _FOREIGN_TOKENS)
    return st.recursive(
        leaves,
        lambda children: st.one_of(
            st.lists(children, max_size=3),
            st.tuples(children, children),
            st.dictionaries(st.text(max_size=4), children, max_size=3),
        ),
        max_leaves=6,
    ).filter(lambda token: token is not None)


def bad_states() -> st.SearchStrategy[Any]:
    """Everything that is not ``bytes`` (nor a subclass of it)."""
    return st.one_of(
        st.text(max_size=40),
        st.binary(max_size=40).map(bytearray),
        st.binary(max_size=40).map(lambda raw: memoryview(raw)),
        st.integers(),
        st.floats(),
        st.none(),
        st.booleans(),
        st.lists(st.binary(max_size=4), max_size=3),
        st.tuples(st.binary(max_size=4)),
        st.dictionaries(st.binary(max_size=4), st.binary(max_size=4), max_size=2),
        st.builds(object),
        st.builds(Hostile),
        st.builds(EqualsEverything),
        st.binary(max_size=40).map(lambda raw: iter([raw])),
    )


@dataclass(frozen=True)
class Forgery:
    """How to make a forged token from the current one (drawn before the current one is known,
    so that what Hypothesis draws never depends on the store's state)."""

    label: str
    make: Callable[[Any], Any]

    def __repr__(self) -> str:
        return self.label


def _forgery(label: str, make: Callable[[Any], Any]) -> Forgery:
    return Forgery(label, make)


OTHER_RUN = Forgery("the token of another run", lambda real: real)  # resolved by the test
_KEEP = "keep"

_FILE_EDITS = st.sampled_from(
    [
        _forgery("upper case", str.upper),
        _forgery("leading space", lambda real: f" {real}"),
        _forgery("trailing newline", lambda real: f"{real}\n"),
        _forgery("counter with a leading zero", lambda real: real.replace("-", "-0")),
        _forgery("counter with a plus sign", lambda real: real.replace("-", "-+")),
        _forgery("counter as float", lambda real: f"{real}.0"),
        _forgery("colon for dash", lambda real: real.replace("-", ":")),
        _forgery("incarnation alone", lambda real: real.partition("-")[0]),
        _forgery("counter alone as str", lambda real: real.partition("-")[2]),
        _forgery("counter alone as int", lambda real: int(real.partition("-")[2])),
        _forgery("fields as a tuple", lambda real: tuple(real.partition("-")[::2])),
        _forgery("bytes", str.encode),
        _forgery("in a list", lambda real: [real]),
    ]
)


def _with_counter(counter: int) -> Forgery:
    return _forgery(f"counter {counter}", lambda real: f"{real.partition('-')[0]}-{counter}")


def _file_token(incarnation: str, counter: int) -> Forgery:
    return _forgery(f"{incarnation}-{counter}", lambda real: f"{incarnation}-{counter}")


def _edit_redis(incarnation: str, offset: int) -> Forgery:
    edits: dict[str, Callable[[str], str]] = {
        _KEEP: lambda text: text,
        "upper": str.upper,
        "shorter": lambda text: text[:-1],
        "longer": lambda text: text + "0",
        "zeros": lambda text: "0" * 32,
    }
    return _forgery(
        f"RedisToken(incarnation {incarnation}, counter {offset:+})",
        lambda real: RedisToken(edits[incarnation](real.incarnation), real.counter + offset),
    )


def _edit_etcd(cluster: int | None, key: str, revision: tuple[str, int]) -> Forgery:
    keys: dict[str, Callable[[bytes], bytes]] = {
        _KEEP: lambda raw: raw,
        "longer": lambda raw: raw + b"x",
        "shorter": lambda raw: raw[:-1],
        "empty": lambda raw: b"",
    }

    def make(real: EtcdToken) -> EtcdToken:
        kind, number = revision
        return EtcdToken(
            real.cluster_id if cluster is None else cluster,
            keys[key](real.key),
            real.mod_revision + number if kind == "offset" else number,
        )

    return _forgery(f"EtcdToken(cluster {cluster}, key {key}, revision {revision})", make)


def _edit_postgres(incarnation: str, version: tuple[str, int]) -> Forgery:
    edits: dict[str, Callable[[bytes], bytes]] = {
        _KEEP: lambda raw: raw,
        "shorter": lambda raw: raw[:-1],
        "longer": lambda raw: raw + b"\0",
        "zeros": lambda raw: bytes(16),
        "reversed": lambda raw: raw[::-1],
    }

    def make(real: PostgresToken) -> PostgresToken:
        kind, number = version
        return PostgresToken(
            edits[incarnation](real.incarnation),
            real.version + number if kind == "offset" else number,
        )

    return _forgery(f"PostgresToken(incarnation {incarnation}, version {version})", make)


def _constant(token: Any) -> Forgery:
    return _forgery(repr(token), lambda real: token)


_TEXT_FORMS = st.sampled_from(
    [
        _forgery("str()", str),
        _forgery("repr()", repr),
        _forgery("fields as a tuple", dataclasses.astuple),
        _forgery("first field", lambda real: dataclasses.astuple(real)[0]),
        _forgery("last field", lambda real: dataclasses.astuple(real)[-1]),
    ]
)
_OFFSET_OR_ANY = st.tuples(st.just("offset"), st.integers(-3, 3)) | st.tuples(
    st.just("any"), _INT64
)


def forgeries(kind: str) -> st.SearchStrategy[Forgery]:
    """Well-typed guesses at a token of *kind*: its own class with guessed or edited fields, its
    string and tuple forms (what another process could have sent over), another run's token."""
    if kind == "memory":
        found: st.SearchStrategy[Forgery] = st.sampled_from(
            [
                _forgery("a new MemoryToken", lambda real: MemoryToken()),
                _forgery("a copy", copy.copy),
                _forgery("repr()", repr),
            ]
        )
    elif kind == "file":  # "<incarnation hex>-<counter>"
        found = st.one_of(
            _FILE_EDITS,
            st.integers(-5, 2**70).map(_with_counter),
            st.builds(_file_token, _HEX32, st.integers(0, 2**64)),
        )
    elif kind == "redis":
        found = st.one_of(
            st.builds(
                _edit_redis,
                st.sampled_from([_KEEP, "upper", "shorter", "longer", "zeros"]),
                st.integers(-3, 3),
            ),
            st.builds(RedisToken, _REDIS_INCARNATIONS, _REDIS_COUNTERS).map(_constant),
            _TEXT_FORMS,
        )
    elif kind == "etcd":
        found = st.one_of(
            st.builds(
                _edit_etcd,
                st.none() | st.integers(0, 2**64 - 1),
                st.sampled_from([_KEEP, "longer", "shorter", "empty"]),
                _OFFSET_OR_ANY,
            ),
            _TEXT_FORMS,
        )
    else:
        found = st.one_of(
            st.builds(
                _edit_postgres,
                st.sampled_from([_KEEP, "shorter", "longer", "zeros", "reversed"]),
                _OFFSET_OR_ANY,
            ),
            st.builds(PostgresToken, st.binary(max_size=20), _INT64).map(_constant),
            _TEXT_FORMS,
        )
    return found | st.just(OTHER_RUN)


def raw_values(encode: Callable[[bytes], bytes] | None) -> st.SearchStrategy[bytes]:
    """Raw stored values: random bytes and, given the layout, valid values with one edit
    (a byte changed, cut short, extended) and sometimes a valid value itself."""
    if encode is None:
        return st.binary(max_size=128)
    valid = st.binary(max_size=48).map(encode)

    def flip(value: bytes, index: int, mask: int) -> bytes:
        index %= len(value)
        return value[:index] + bytes([value[index] ^ mask]) + value[index + 1 :]

    return st.one_of(
        st.binary(max_size=128),
        st.builds(flip, valid, st.integers(0), st.integers(1, 255)),
        valid.flatmap(lambda value: st.integers(0, len(value) - 1).map(lambda n: value[:n])),
        st.builds(operator.add, valid, st.binary(min_size=1, max_size=8)),
        valid,
    )


_INCARNATIONS = st.one_of(
    _HEX32.map(str.encode),
    _HEX32.map(lambda text: text.upper().encode()),
    _HEX32.map(lambda text: text[:-1].encode()),
    _HEX32.map(lambda text: (text + "0").encode()),
    st.binary(max_size=40),
)
_COUNTERS = st.one_of(
    st.integers(1, 10**18 - 1).map(lambda n: b"%d" % n),
    st.sampled_from([b"0", b"01", b"-1", b"+1", b"1.0", b" 1", b"1 ", b"1e3", b"", b"1" * 19]),
    st.binary(max_size=20),
)
REDIS_HASHES = st.fixed_dictionaries(
    {},
    optional={
        b"format": st.sampled_from([b"arendezvous/1", b"arendezvous/2", b"", b"arendezvous/1 "])
        | st.binary(max_size=16),
        b"incarnation": _INCARNATIONS,
        b"counter": _COUNTERS,
        b"state": st.binary(max_size=40),
        b"writer": st.binary(max_size=20),
    },
).filter(bool)


SCHEMES = ("memory", "file", "redis", "rediss", "etcd", "postgresql", "postgres", "s3")
_OPTION_NAMES = (
    "timeout", "key_prefix", "max_state_size", "durable", "poll_interval", "ssl_cert_reqs",
    "ssl_check_hostname", "tls", "table", "pool_size", "heartbeat", "sslmode", "application_name",
    "endpoint_url", "region", "profile", "addressing_style", "max_poll_interval",
    "TIMEOUT", "bogus", "",
)  # fmt: skip
_ODD = "/?#@:[]%!$&'()*+,;= \t\n\\\"<>^`{|}~\x00é"
_ODD_TEXT = st.text(st.sampled_from(_ODD) | _NO_SURROGATES, max_size=10)
_OPTION_VALUES = (
    st.sampled_from(
        ["1", "0", "-1", "1.5", "nan", "inf", "", "true", "maybe", "required", "require", "x.y.z"]
    )
    | _ODD_TEXT
)


@dataclass(frozen=True)
class OddUrl:
    """A URL built from odd parts, the passwords in it, and its userinfo as written."""

    url: str
    secrets: tuple[str, ...]
    userinfo: str


@st.composite
def odd_urls(draw: st.DrawFn, scheme: str) -> OddUrl:
    """A URL of *scheme* built from odd parts. Its passwords are marked at both ends, so that
    one showing in a message is a leak, never a coincidence."""
    secrets: list[str] = []
    userinfo = ""
    if draw(st.booleans()):
        password = "Pw9" + draw(_ODD_TEXT) + "9wP"
        secrets.append(password)
        shown = password if draw(st.booleans()) else urllib.parse.quote(password, safe="")
        user = draw(st.sampled_from(["", "user", "us%40er"]) | _ODD_TEXT)
        userinfo = f"{user}:{shown}@"
    host = draw(
        st.sampled_from(["127.0.0.1", "localhost", "[::1]", "", "h1,h2", "[::1", "::1"]) | _ODD_TEXT
    )
    port = draw(st.none() | st.integers(-5, 70000).map(str) | _ODD_TEXT)
    path = draw(st.sampled_from(["", "/", "/0", "/db", "/tmp/x", "/a/b"]) | _ODD_TEXT)
    options = draw(
        st.lists(st.tuples(st.sampled_from(_OPTION_NAMES) | _ODD_TEXT, _OPTION_VALUES), max_size=4)
    )
    if scheme.startswith("postgres") and draw(st.booleans()):
        query_password = "Qz8" + draw(_ODD_TEXT) + "8zQ"
        secrets.append(query_password)
        options.append((draw(st.sampled_from(["password", "sslpassword"])), query_password))
    if scheme == "s3" and draw(st.booleans()):
        # S3 credentials never go in a URL: as options, or inside the endpoint's URL.
        secret = "Sk7" + draw(_ODD_TEXT) + "7kS"
        secrets.append(secret)
        options.append(
            draw(
                st.sampled_from(
                    [
                        ("aws_secret_access_key", secret),
                        ("aws_session_token", secret),
                        ("endpoint_url", f"http://key:{secret}@127.0.0.1:9000"),
                    ]
                )
            )
        )
    if draw(st.booleans()):
        query = urllib.parse.urlencode(options)
    else:
        query = "&".join(f"{key}={value}" for key, value in options)
    fragment = draw(st.none() | _ODD_TEXT)
    url = f"{scheme}://{userinfo}{host}" + (f":{port}" if port is not None else "") + path
    url += (f"?{query}" if query else "") + (f"#{fragment}" if fragment is not None else "")
    return OddUrl(url, tuple(secrets), userinfo)
