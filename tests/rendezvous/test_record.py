"""The round record: versioned JSON that round-trips, refuses anything else, is validated on the
way out exactly as on the way in, and stays small."""

from __future__ import annotations

import contextlib
import json
import pickle
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arendezvous import RendezvousStateError
from arendezvous._members import check_node
from arendezvous.rendezvous import SCHEMA_VERSION
from arendezvous.rendezvous._record import (
    MAX_ROUND,
    RoundRecord,
    decode_record,
    encode_record,
    group_name,
)

INCARNATION = "0123456789abcdef" * 2


def _document(**changes: Any) -> bytes:
    document: dict[str, Any] = {
        "v": SCHEMA_VERSION, "id": INCARNATION, "round": 0, "complete": True, "closed": False,
        "last_call": False, "waiting": False, "participants": ["a"], "seq": 1, "previous": [],
        "previous_seq": 0,
    }
    document.update(changes)
    return json.dumps(document).encode()


node_ids = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=12)


@st.composite
def records(draw: st.DrawFn) -> RoundRecord:
    participants = tuple(sorted(draw(st.lists(node_ids, unique=True, max_size=12))))
    complete = bool(participants) and draw(st.booleans())
    round = draw(st.integers(0, MAX_ROUND))
    previous = () if complete or round == 0 else tuple(
        sorted(draw(st.lists(node_ids, unique=True, max_size=12)))
    )
    return RoundRecord(
        incarnation=draw(st.text("0123456789abcdef", min_size=32, max_size=32)),
        round=round,
        complete=complete,
        closed=draw(st.booleans()),
        last_call=not complete and draw(st.booleans()),
        waiting=complete and draw(st.booleans()),
        participants=participants if complete else (),
        seq=draw(st.integers(0, MAX_ROUND)) if complete else 0,
        previous=previous,
        previous_seq=draw(st.integers(0, MAX_ROUND)) if previous else 0,
    )


@given(records())
@settings(max_examples=200)
def test_round_trip(record: RoundRecord) -> None:
    data = encode_record(record)
    assert json.loads(data)["v"] == SCHEMA_VERSION
    # Decode a copy: the cache keyed by the very bytes object must not be what answers.
    assert decode_record(bytes(bytearray(data))) == record


@given(st.binary(max_size=200))
@settings(max_examples=300)
def test_arbitrary_bytes_decode_or_raise_state_error(data: bytes) -> None:
    with contextlib.suppress(RendezvousStateError):
        decode_record(data)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@given(st.dictionaries(
    st.sampled_from(["v", "id", "round", "complete", "closed", "last_call", "waiting",
                     "participants", "seq", "previous", "previous_seq"]),
    json_values,
))
@settings(max_examples=300)
def test_arbitrary_json_objects_decode_or_raise_state_error(document: dict[str, Any]) -> None:
    with contextlib.suppress(RendezvousStateError):
        decode_record(json.dumps(document).encode())


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "not arendezvous JSON"),
        (b"\xff\xfe", "not arendezvous JSON"),
        (b"[" * 100_000, "not arendezvous JSON"),
        (pickle.dumps({"round": 1}), "not arendezvous JSON"),  # PyTorch's format is refused
        (b"[1, 2]", "not a versioned JSON object"),
        (b'{"round": 1}', "not a versioned JSON object"),
        (_document(v=1), "schema version 1"),  # an older arendezvous: a clear refusal
        (_document(v="2"), "schema version '2'"),
        (_document(v=True), "schema version True"),
        (_document(extra=1), "unexpected fields \\['extra'\\]"),
        (_document(id="xyz"), "'id' must be 32"),
        (_document(id=INCARNATION.upper()), "'id' must be 32"),
        (_document(round=-1), "'round' must be an integer"),
        (_document(round=True), "'round' must be"),
        (_document(round=1.0), "'round' must be"),
        (_document(round=MAX_ROUND + 1), "'round' must be"),
        (_document(complete=1), "'complete' must be true or false"),
        (_document(last_call=None), "'last_call' must be"),
        (_document(participants="a"), "'participants' must be a list"),
        (_document(participants=[""]), "list of node ids"),
        (_document(participants=[1]), "list of node ids"),
        (_document(participants=["b", "a"]), "rank \\(sorted\\) order"),
        (_document(participants=["a", "a"]), "distinct"),
        (_document(participants=[]), "complete round without"),
        (_document(last_call=True), "no last call"),
        (_document(complete=False), "lists no participants"),
        (_document(complete=False, participants=[], waiting=True), "no waiting flag"),
        (_document(previous="a"), "'previous' must be a list"),
        (_document(previous=[2]), "'previous' must be a list of node ids"),
        (_document(complete=False, participants=[], round=1, previous=["b", "a"]),
         "previous participants must be distinct and in rank"),
        (_document(previous=["a"]), "only an open round after another"),
        (_document(complete=False, participants=[], previous=["a"]), "only an open round after"),
        (_document(seq=-1), "'seq' must be an integer"),
        (_document(seq=True), "'seq' must be an integer"),
        (_document(seq=MAX_ROUND + 1), "'seq' must be an integer"),
        (_document(complete=False, participants=[]), "an open round has no seq"),
        (_document(complete=False, participants=[], seq=0, round=1, previous_seq=3),
         "a previous_seq without previous participants"),
        (_document(previous_seq="1"), "'previous_seq' must be an integer"),
    ],
)
def test_malformed_records_are_refused(data: bytes, match: str) -> None:
    with pytest.raises(RendezvousStateError, match=match):
        decode_record(data)


def test_what_the_library_writes_it_can_read() -> None:
    # Bounds are checked on the way out as on the way in: the last round cannot be ended...
    last = RoundRecord.new(MAX_ROUND).completed(("a",), 1)
    assert decode_record(bytes(encode_record(last))) == last
    with pytest.raises(RendezvousStateError, match="every round number"):
        last.ended()
    # ...and no record that decoding would refuse can even be built.
    with pytest.raises(RendezvousStateError):
        RoundRecord(INCARNATION, MAX_ROUND + 1)
    with pytest.raises(RendezvousStateError):
        RoundRecord(INCARNATION, complete=True)
    with pytest.raises(RendezvousStateError):
        RoundRecord(INCARNATION, participants=("a",))


def test_transitions() -> None:
    record = RoundRecord.new(7)
    assert (record.round, record.complete, record.closed) == (7, False, False)
    assert record.group == group_name(record.incarnation, 7)
    assert record.next_group == group_name(record.incarnation, 8)
    calling = record.with_last_call(True)
    done = calling.completed(("z", "b", "m"), 9)
    assert (done.complete, done.last_call, done.participants) == (True, False, ("b", "m", "z"))
    assert done.rank_of("z") == 2
    waiting = done.with_waiting(True)
    ended = waiting.ended()
    assert (ended.round, ended.complete, ended.waiting, ended.participants) == (8, False, False, ())
    assert ended.previous == ("b", "m", "z")  # a participant that reads late still finds its rank
    assert (done.seq, ended.seq, ended.previous_seq) == (9, 0, 9)
    assert ended.with_last_call(True).completed(("q",), 10).previous == ()
    assert ended.ended().previous == ()  # an open round ended: no round before it completed
    assert ended.incarnation == record.incarnation
    assert ended.ended(last_call=True).last_call
    closed = ended.closed_record()
    assert closed.closed
    assert RoundRecord.new().incarnation != RoundRecord.new().incarnation


def test_compact_at_a_thousand_nodes() -> None:
    record = RoundRecord.new().completed(tuple(f"node-{index:04d}" for index in range(1000)), 1000)
    data = encode_record(record)
    # ~12 bytes per node id: the record every node reads once per round stays small.
    assert len(data) < 14_000
    assert decode_record(data) == record


def test_node_ids_are_validated() -> None:
    assert check_node("node-1") == "node-1"
    with pytest.raises(TypeError):
        check_node(1)
    with pytest.raises(ValueError):
        check_node("")
    with pytest.raises(ValueError):
        check_node("x" * 1025)
    with pytest.raises(ValueError):
        check_node("\ud800")
    with pytest.raises(ValueError):
        check_node("a\x00b")
