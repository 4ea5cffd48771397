from __future__ import annotations

import urllib.parse
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import pytest

from arendezvous import AsyncRendezvousBackend, MemoryBackend, open_backend, registered_schemes
from arendezvous.backends import _url, _urlparse


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


# -- the parsing helpers every backend's from_url shares -------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:pw@host:1/0", "redis://:***@host:1/0"),
        ("redis://user:pw@host:1/0?timeout=2", "redis://user:***@host:1/0?timeout=2"),
        (
            "postgresql://u:pw@h/db?password=x&sslpassword=y&application_name=a",
            "postgresql://u:***@h/db?password=***&sslpassword=***&application_name=a",
        ),
        ("etcd://h?token=t&key_prefix=/a/", "etcd://h?token=***&key_prefix=/a/"),
        ("postgresql://u@h/db?PassWord=x", "postgresql://u@h/db?PassWord=***"),
        ("redis://h/0#frag", "redis://h/0#***"),
        ("redis://u:p/ss@h/0", "redis://***"),  # '/' in a password
        ("redis://u:p?ss@h/0", "redis://***"),  # '?' in a password
        ("redis://u:pa[ss@h", "redis://u:***@h"),
        ("memory://", "memory://"),
    ],
)
def test_the_one_redactor(url: str, shown: str) -> None:
    redacted = _urlparse.redact_url(url)
    assert redacted == shown
    for secret in ("pw", "x", "y", "ss", "t&"):
        if secret not in shown:
            assert secret not in redacted


@pytest.mark.parametrize("text", ["0", "65536", "-1", "+80", " 80", "1e3", "0x50", "8_0", "²", ""])
def test_ports_are_ascii_numbers_from_1_to_65535(text: str) -> None:
    with pytest.raises(ValueError, match="port"):
        _urlparse.parse_port(text)


def test_hosts_and_ports() -> None:
    parse = _urlparse.parse_host_port
    assert parse("h", 7, "x") == ("h", 7)
    assert parse(" h:8 ", 7, "x") == ("h", 8)
    assert parse("[::1]:9", 7, "x") == ("::1", 9)
    assert parse("[::1]", 7, "x") == ("::1", 7)
    for bad, match in [
        ("", "empty"),
        ("::1", "brackets"),
        ("[nope]:1", "IPv6"),
        ("[::1]x", "malformed"),
        ("h:", "port"),
        ("h:99999", "port"),
        ("a b:1", "malformed host"),
    ]:
        with pytest.raises(ValueError, match=match):
            parse(bad, 7, "x")


def test_seconds_counts_and_booleans() -> None:
    assert _urlparse.parse_seconds("0.5") == 0.5
    assert _urlparse.parse_positive_int("3") == 3
    assert _urlparse.parse_bool("On") is True
    for bad in ("0", "-1", "nan", "inf"):
        with pytest.raises(ValueError):
            _urlparse.parse_seconds(bad)
    for bad in ("0", "-2", "1.5"):
        with pytest.raises(ValueError):
            _urlparse.parse_positive_int(bad)


def test_a_credential_option_value_is_never_repeated() -> None:
    parsed = urllib.parse.urlsplit("x://h?password=hunter2&sslpassword=hunter3")
    with pytest.raises(ValueError) as caught:
        _urlparse.parse_options(parsed, {"password": float, "sslpassword": float})
    assert "hunter" not in str(caught.value)


def test_one_tls_vocabulary() -> None:
    build = _urlparse.TlsOptions.build
    assert build() == _urlparse.TlsOptions(enabled=False)
    assert build(tls_ca_file="/ca.pem").enabled  # a file implies TLS
    assert build(tls_verify="none") == _urlparse.TlsOptions(enabled=True, verify="none")
    cases: list[tuple[dict[str, Any], type[Exception], str]] = [
        ({"tls": False, "tls_ca_file": "/ca.pem"}, ValueError, "tls=false"),
        ({"tls_key_file": "/k.pem"}, ValueError, "tls_cert_file"),
        ({"tls_verify": "sometimes"}, ValueError, "full, ca, none"),
        ({"tls": "yes"}, TypeError, "tls must be a bool"),
        ({"tls_ca_file": 5}, TypeError, "tls_ca_file"),
    ]
    for options, error, match in cases:
        with pytest.raises(error, match=match):
            build(**options)
    assert _urlparse.merge_alias("new", None, "old", 1) == 1
    assert _urlparse.merge_alias("new", 2, "old", None) == 2
    with pytest.raises(ValueError, match="give new or its older name old, not both"):
        _urlparse.merge_alias("new", 2, "old", 1)


def test_a_tls_file_that_cannot_be_read_is_named_not_shown(tmp_path: Path) -> None:
    key = tmp_path / "key.pem"
    key.write_bytes(b"-----BEGIN PRIVATE KEY----- secret")
    assert _urlparse.read_tls_file("tls_key_file", str(key)) == key.read_bytes()
    assert _urlparse.read_tls_file("tls_key_file", None) is None
    with pytest.raises(ValueError, match=r"cannot read tls_key_file file .*missing\.pem"):
        _urlparse.read_tls_file("tls_key_file", str(tmp_path / "missing.pem"))


def test_the_registry_keeps_the_helpers_its_backends_import() -> None:
    """memory and file import the parsing helpers from the registry's module."""
    assert _url.parse_options is _urlparse.parse_options
    assert _url.parse_seconds is _urlparse.parse_seconds
    assert _url.parse_bool is _urlparse.parse_bool
