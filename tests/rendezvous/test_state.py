"""The shared state: versioned JSON that round-trips, refuses anything else, and stays small."""

from __future__ import annotations

import contextlib
import json
import pickle
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arendezvous import RendezvousStateError
from arendezvous.rendezvous import SCHEMA_VERSION
from arendezvous.rendezvous._state import (
    RendezvousState,
    Settings,
    add_participant,
    add_redundant,
    add_waiting,
    beat,
    check_node,
    close,
    complete_round,
    decode_state,
    encode_state,
    end_round,
    evict_dead,
    remove_node,
)

SETTINGS = Settings(min_nodes=2, max_nodes=3, last_call_ms=1000, heartbeat_ms=100,
                    heartbeat_timeout_ms=300)
NOW = 1_700_000_000_000


def _document(**changes: Any) -> bytes:
    document: dict[str, Any] = {
        "v": SCHEMA_VERSION, "round": 0, "complete": False, "closed": False, "last_call": None,
        "participants": ["a"], "waiting": [], "redundant": [], "hb_base": NOW, "hb": [0],
    }
    document.update(changes)
    return json.dumps(document).encode()


node_ids = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=12)


@st.composite
def states(draw: st.DrawFn) -> RendezvousState:
    nodes = draw(st.lists(node_ids, unique=True, max_size=12))
    split_a = draw(st.integers(0, len(nodes)))
    split_b = draw(st.integers(split_a, len(nodes)))
    participants = tuple(nodes[:split_a])
    complete = bool(participants) and draw(st.booleans())
    return RendezvousState(
        round=draw(st.integers(0, 2**40)),
        complete=complete,
        closed=draw(st.booleans()),
        last_call=draw(st.none() | st.integers(0, 2**45)),
        participants=participants,
        waiting=tuple(nodes[split_a:split_b]),
        redundant=tuple(nodes[split_b:]),
        heartbeats={node: draw(st.integers(0, 2**45)) for node in nodes},
    )


@given(states())
@settings(max_examples=200)
def test_round_trip(state: RendezvousState) -> None:
    data = encode_state(state)
    assert json.loads(data)["v"] == SCHEMA_VERSION
    # Decode a copy: the cache keyed by the very bytes object must not be what answers.
    assert decode_state(bytes(bytearray(data))) == state


@given(st.binary(max_size=200))
@settings(max_examples=300)
def test_arbitrary_bytes_decode_or_raise_state_error(data: bytes) -> None:
    with contextlib.suppress(RendezvousStateError):
        decode_state(data)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@given(st.dictionaries(
    st.sampled_from(["v", "round", "complete", "closed", "last_call", "participants", "waiting",
                     "redundant", "hb_base", "hb"]),
    json_values,
))
@settings(max_examples=300)
def test_arbitrary_json_objects_decode_or_raise_state_error(document: dict[str, Any]) -> None:
    with contextlib.suppress(RendezvousStateError):
        decode_state(json.dumps(document).encode())


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "not arendezvous JSON"),
        (b"\xff\xfe", "not arendezvous JSON"),
        (b"[" * 100_000, "not arendezvous JSON"),
        (pickle.dumps({"round": 1}), "not arendezvous JSON"),  # PyTorch's format is refused
        (b"[1, 2]", "not a versioned JSON object"),
        (b'{"round": 1}', "not a versioned JSON object"),
        (_document(v=2), "schema version 2"),
        (_document(v="1"), "schema version '1'"),
        (_document(v=True), "schema version True"),
        (_document(extra=1), "unexpected fields \\['extra'\\]"),
        (_document(round=-1), "'round' must be a non-negative integer"),
        (_document(round=True), "'round' must be"),
        (_document(round=1.0), "'round' must be"),
        (_document(round=2**64), "'round' must be"),
        (_document(complete=1), "'complete' must be true or false"),
        (_document(last_call="soon"), "'last_call' must be"),
        (_document(participants="a"), "'participants' must be a list"),
        (_document(participants=[""], hb=[0]), "not a node id"),
        (_document(participants=[1], hb=[0]), "not a node id"),
        (_document(participants=["a"], waiting=["a"], hb=[0, 0]), "listed twice"),
        (_document(hb=[]), "one heartbeat per listed node"),
        (_document(hb=[-1]), "not a valid time"),
        (_document(hb=[NOW + 1]), "not a valid time"),
        (_document(participants=[], hb=[], complete=True), "complete round without"),
    ],
)
def test_malformed_states_are_refused(data: bytes, match: str) -> None:
    with pytest.raises(RendezvousStateError, match=match):
        decode_state(data)


def test_compact_at_a_thousand_nodes() -> None:
    state = RendezvousState()
    settings_ = Settings(min_nodes=1000, max_nodes=1000, last_call_ms=30_000, heartbeat_ms=5000,
                         heartbeat_timeout_ms=15_000)
    for index in range(1000):
        state = add_participant(state, f"node-{index:04d}", NOW + index * 7, settings_)
    assert state.complete
    data = encode_state(state)
    # ~12 bytes per name, ~5 per heartbeat: well under 20 kB (reported in the benchmark).
    assert len(data) < 20_000
    assert decode_state(data) == state


def test_joining_starts_the_last_call_at_min_and_completes_at_max() -> None:
    state = add_participant(RendezvousState(), "b", NOW, SETTINGS)
    assert state.last_call is None
    state = add_participant(state, "c", NOW + 5, SETTINGS)
    assert state.last_call == NOW + 5 + SETTINGS.last_call_ms
    assert not state.complete
    state = add_participant(state, "a", NOW + 6, SETTINGS)
    assert state.complete
    assert state.last_call is None
    assert state.participants == ("a", "b", "c")  # ranks: sorted node ids
    assert state.rank_of("c") == 2


def test_complete_round_sorts_and_clears_last_call() -> None:
    state = RendezvousState(participants=("z", "y"), heartbeats={"z": NOW, "y": NOW},
                            last_call=NOW)
    done = complete_round(state)
    assert (done.complete, done.participants, done.last_call) == (True, ("y", "z"), None)


def test_a_complete_round_never_changes_members_it_ends_instead() -> None:
    state = complete_round(add_participant(add_participant(RendezvousState(), "a", NOW, SETTINGS),
                                           "b", NOW, SETTINGS))
    state = add_waiting(state, "c", NOW)
    left = remove_node(state, "a", NOW, SETTINGS)
    # The waiting node moves into the new round at once; "b" must join it again itself.
    assert (left.round, left.complete, left.participants, left.waiting) == (1, False, ("c",), ())
    assert set(left.heartbeats) == {"c"}
    assert left.last_call is None  # one node: below min_nodes


def test_leaving_an_open_round_below_min_cancels_the_last_call() -> None:
    state = add_participant(add_participant(RendezvousState(), "a", NOW, SETTINGS), "b", NOW,
                            SETTINGS)
    assert state.last_call is not None
    state = remove_node(state, "b", NOW, SETTINGS)
    assert (state.participants, state.last_call, state.round) == (("a",), None, 0)
    assert remove_node(state, "nobody", NOW, SETTINGS) is state


def test_evicting_the_dead() -> None:
    state = add_participant(RendezvousState(), "a", NOW, SETTINGS)
    state = add_participant(state, "b", NOW + 200, SETTINGS)
    state = add_redundant(state, "r", NOW)
    assert evict_dead(state, NOW + 300, SETTINGS, spare="x") is state  # nobody too old yet
    evicted = evict_dead(state, NOW + 301, SETTINGS, spare="x")
    assert evicted.participants == ("b",)
    assert evicted.redundant == ()
    assert evicted.last_call is None  # below min again
    spared = evict_dead(state, NOW + 301, SETTINGS, spare="a")
    assert spared.participants == ("a", "b")


def test_evicting_a_member_of_a_complete_round_ends_it() -> None:
    state = complete_round(add_participant(add_participant(RendezvousState(), "a", NOW, SETTINGS),
                                           "b", NOW + 1000, SETTINGS))
    evicted = evict_dead(state, NOW + 1000, SETTINGS, spare="b")
    assert (evicted.round, evicted.complete, evicted.participants) == (1, False, ())


def test_heartbeats_never_add_nodes_and_closing_is_final() -> None:
    state = add_waiting(RendezvousState(), "w", NOW)
    assert beat(state, "stranger", NOW + 1) is state
    assert beat(state, "w", NOW - 1) is state
    assert beat(state, "w", NOW + 1).heartbeats == {"w": NOW + 1}
    closed = close(state)
    assert closed.closed
    assert close(closed) is closed
    assert end_round(closed, NOW, SETTINGS).closed


def test_a_new_round_takes_in_the_waiting_then_the_redundant_up_to_max() -> None:
    state = RendezvousState(
        round=4, complete=True, participants=("p",), waiting=("w1", "w2"), redundant=("r1", "r2"),
        heartbeats=dict.fromkeys(("p", "w1", "w2", "r1", "r2"), NOW),
    )
    new = end_round(state, NOW + 1, SETTINGS)
    # max_nodes is 3: the round is full at once, so it completes; r2 stays redundant.
    assert (new.round, new.complete, new.participants) == (5, True, ("r1", "w1", "w2"))
    assert (new.waiting, new.redundant) == ((), ("r2",))
    two = end_round(replace(state, waiting=("w1", "w2"), redundant=()), NOW + 1, SETTINGS)
    assert (two.complete, two.participants, two.last_call) == (False, ("w1", "w2"), NOW + 1001)


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
