from __future__ import annotations

from importlib.metadata import EntryPoint
from typing import Any

import pytest

from arendezvous import AsyncRendezvousBackend, MemoryBackend, open_backend, registered_schemes
from arendezvous.backends import _url


def test_builtin_schemes_are_registered() -> None:
    assert {"memory", "file", "redis", "etcd", "postgresql"} <= set(registered_schemes())


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("nosuch://x", "unknown backend URL scheme 'nosuch'; accepted schemes: .*file://"),
        ("no scheme at all", "must look like SCHEME://"),
        ("://x", "must look like SCHEME://"),
        ("", "must look like SCHEME://"),
    ],
)
def test_bad_urls_name_the_accepted_schemes(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        open_backend(url, run_id="r")


def test_url_must_be_a_string_and_run_id_valid() -> None:
    with pytest.raises(TypeError):
        open_backend(b"memory://", run_id="r")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="empty"):
        open_backend("memory://", run_id="")


def test_scheme_is_case_insensitive() -> None:
    assert isinstance(open_backend("MEMORY://", run_id="r"), MemoryBackend)


def test_third_party_schemes_come_from_entry_points(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[tuple[str, str]] = []

    def factory(url: str, *, run_id: str) -> AsyncRendezvousBackend:
        made.append((url, run_id))
        return MemoryBackend(run_id)

    entry_point = EntryPoint(name="acme", value="x:y", group=_url.ENTRY_POINT_GROUP)
    monkeypatch.setattr(EntryPoint, "load", lambda self: factory)

    def fake_entry_points(**kwargs: Any) -> list[EntryPoint]:
        assert kwargs == {"group": _url.ENTRY_POINT_GROUP}
        return [entry_point]

    monkeypatch.setattr(_url, "entry_points", fake_entry_points)
    assert "acme" in registered_schemes()
    backend = open_backend("acme://somewhere", run_id="r1")
    assert isinstance(backend, MemoryBackend)
    assert made == [("acme://somewhere", "r1")]


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="given twice"):
        open_backend("memory://?max_state_size=1&max_state_size=2", run_id="r")
    with pytest.raises(ValueError, match="bad value for option 'max_state_size'"):
        open_backend("memory://?max_state_size=big", run_id="r")
