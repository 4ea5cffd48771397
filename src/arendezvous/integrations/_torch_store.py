"""``BackendStore``: a ``torch.distributed.Store`` kept in one arendezvous run.

torch's rendezvous handlers need a c10d store shared by every node before any of them knows its
rank: ``DynamicRendezvousHandler`` publishes rank 0's address (``MASTER_ADDR``/``MASTER_PORT``)
through it. torch's own answer is a ``TCPStore`` hosted by whichever node guesses it is the host;
this store lives in the same backend as the rendezvous, so Redis, etcd, PostgreSQL or a shared file
is all a job needs.

All keys live in one JSON document (base64 values) in one run, changed by compare-and-swap, and
blocking reads wait with ``wait_for_change``. It suits the few keys of a bootstrap, not a training
loop's traffic: the torchrun handler hands its agents rank 0's ``TCPStore`` for that.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import TypeVar

import torch.distributed as dist

# torch.distributed re-exports these from here without declaring it; importing from the defining
# module is what type checkers can follow.
from torch._C._distributed_c10d import Store

from .._backend import AsyncRendezvousBackend, Token
from .._closing import ClosesOnExit
from .._errors import RendezvousConnectionError, RendezvousStateError
from ..sync import SyncBackend
from ._torch_backend import as_sync_backend

__all__ = ("DEFAULT_STORE_TIMEOUT", "BackendStore")

DEFAULT_STORE_TIMEOUT = timedelta(seconds=300)
"""How long blocking reads wait for a key by default (``TCPStore``'s default too)."""

_FORMAT = "arendezvous.c10d"
_VERSION = 1

_T = TypeVar("_T")
_Keys = dict[str, bytes]


def _encode(keys: _Keys) -> bytes:
    document = {
        "format": _FORMAT,
        "version": _VERSION,
        "keys": {key: base64.b64encode(value).decode("ascii") for key, value in keys.items()},
    }
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


def _decode(blob: bytes) -> _Keys:
    # The blob comes from a shared store: untrusted input, checked field by field.
    try:
        document = json.loads(blob)
        if not isinstance(document, dict) or document.get("format") != _FORMAT:
            raise ValueError("not an arendezvous c10d store document")
        if document.get("version") != _VERSION:
            raise ValueError(f"unsupported version {document.get('version')!r}")
        raw_keys = document.get("keys")
        if not isinstance(raw_keys, dict):
            raise ValueError("'keys' is not an object")
        keys: _Keys = {}
        for key, value in raw_keys.items():
            if not isinstance(value, str):
                raise ValueError(f"value of {key!r} is not a string")
            keys[key] = base64.b64decode(value, validate=True)
        return keys
    except (ValueError, UnicodeDecodeError, binascii.Error) as exc:
        raise RendezvousStateError(f"the c10d store's state is corrupt: {exc}") from exc


def _as_bytes(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)


@contextmanager
def _store_errors() -> Iterator[None]:
    # Callers of a c10d store (torch's agent, its store utilities) expect torch's store errors.
    try:
        yield
    except RendezvousStateError as exc:
        raise dist.DistStoreError(str(exc)) from exc
    except RendezvousConnectionError as exc:
        raise dist.DistNetworkError(str(exc)) from exc


class BackendStore(ClosesOnExit, Store):
    """A ``torch.distributed.Store`` whose keys live in one run of an arendezvous backend.

    :param backend: an :class:`~arendezvous.AsyncRendezvousBackend` (wrapped in a new
        :class:`~arendezvous.SyncBackend`, which the store then owns) or a ``SyncBackend``. Give it
        a run of its own: the store's document replaces whatever the run held.
    :param timeout: how long ``get``, ``wait`` and ``multi_get`` wait for missing keys; change it
        with ``set_timeout``. Zero waits forever, as with torch's stores.

    Supports ``set``, ``get``, ``add``, ``append``, ``compare_set``, ``check``, ``wait``,
    ``delete_key``, ``num_keys``, ``multi_get`` and ``multi_set`` with ``TCPStore``'s semantics,
    and works under ``torch.distributed.PrefixStore``. Each call is one compare-and-swap (retried
    on conflict with the state the loser got back); waits use the backend's ``wait_for_change``.
    Timeouts raise ``torch.distributed.DistStoreError``, unreachable stores
    ``DistNetworkError`` and a corrupt document ``DistStoreError``. Safe to call from many
    threads.

    Close it with :meth:`close`, or use it as a context manager (``with BackendStore(...) as
    store:``): closing stops the adapter's loop thread and releases the backend's connections.
    """

    def __init__(
        self,
        backend: AsyncRendezvousBackend | SyncBackend,
        *,
        timeout: timedelta = DEFAULT_STORE_TIMEOUT,
    ) -> None:
        super().__init__()
        self._sync = as_sync_backend(backend)
        self.set_timeout(timeout)

    @property
    def sync_backend(self) -> SyncBackend:
        """The blocking adapter holding the store's document."""
        return self._sync

    def __repr__(self) -> str:
        return f"BackendStore({self._sync.backend!r})"

    def close(self) -> None:
        """Close the wrapped backend. Idempotent; later calls raise ``DistNetworkError``."""
        self._sync.close()

    # -- the document, read and changed whole ----------------------------------------------------

    def _read(self) -> tuple[_Keys, Token | None]:
        current = self._sync.get_state()
        if current is None:
            return {}, None
        return _decode(current[0]), current[1]

    def _update(self, change: Callable[[_Keys], tuple[_Keys | None, _T]]) -> _T:
        """Apply *change* atomically; it returns ``(new keys or None to keep them, result)``."""
        with _store_errors():
            keys, token = self._read()
            while True:
                new_keys, result = change(dict(keys))
                if new_keys is None:
                    return result
                state, token, written = self._sync.set_state(_encode(new_keys), token)
                if written:
                    return result
                # Lost the race: the loser's reply is the winner's state, so no extra read.
                keys = _decode(state) if token is not None else {}

    @staticmethod
    def _deadline(timeout: timedelta) -> float | None:
        seconds = timeout.total_seconds()
        return None if seconds <= 0 else time.monotonic() + seconds

    def _wait_for(self, keys: Sequence[str], timeout: timedelta | None = None) -> _Keys:
        """Block until every key in *keys* exists; return the document that has them."""
        # torch's stubs omit Store.timeout, the property set_timeout() sets.
        limit: timedelta = timeout if timeout is not None else self.timeout  # type: ignore[attr-defined]
        deadline = self._deadline(limit)
        with _store_errors():
            current, token = self._read()
            while True:
                missing = [key for key in keys if key not in current]
                if not missing:
                    return current
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise dist.DistStoreError(
                        f"wait timeout after {limit.total_seconds() * 1000:.0f}ms, "
                        f"keys: {missing!r}"
                    )
                changed = self._sync.wait_for_change(token, timeout=remaining)
                if changed is not None:
                    current, token = _decode(changed[0]), changed[1]

    # -- torch.distributed.Store -------------------------------------------------------------------

    def set(self, key: str, value: bytes | str) -> None:
        data = _as_bytes(value)

        def change(keys: _Keys) -> tuple[_Keys | None, None]:
            if keys.get(key) == data:
                return None, None
            keys[key] = data
            return keys, None

        self._update(change)

    def get(self, key: str) -> bytes:
        return self._wait_for([key])[key]

    def add(self, key: str, value: int) -> int:
        def change(keys: _Keys) -> tuple[_Keys | None, int]:
            raw = keys.get(key, b"")
            try:
                # An empty value counts as 0, as in torch's HashStore.
                total = (int(raw) if raw.strip() else 0) + value
            except ValueError:
                raise dist.DistStoreError(f"value of {key!r} is not an integer") from None
            keys[key] = str(total).encode()
            return keys, total

        return self._update(change)

    def append(self, key: str, value: bytes | str) -> None:
        data = _as_bytes(value)

        def change(keys: _Keys) -> tuple[_Keys | None, None]:
            keys[key] = keys.get(key, b"") + data
            return keys, None

        self._update(change)

    def compare_set(
        self, key: str, expected_value: bytes | str, desired_value: bytes | str
    ) -> bytes:
        expected, desired = _as_bytes(expected_value), _as_bytes(desired_value)

        def change(keys: _Keys) -> tuple[_Keys | None, bytes]:
            current = keys.get(key)
            # TCPStore's rule: a missing key matches only an empty expected value.
            if current is None and expected != b"":
                return None, expected
            if current is not None and current != expected:
                return None, current
            keys[key] = desired
            return keys, desired

        return self._update(change)

    def check(self, keys: list[str]) -> bool:
        with _store_errors():
            current, _ = self._read()
        return all(key in current for key in keys)

    def wait(self, keys: list[str], timeout: timedelta | None = None) -> None:
        self._wait_for(keys, timeout)

    def delete_key(self, key: str) -> bool:
        def change(keys: _Keys) -> tuple[_Keys | None, bool]:
            if key not in keys:
                return None, False
            del keys[key]
            return keys, True

        return self._update(change)

    def num_keys(self) -> int:
        with _store_errors():
            current, _ = self._read()
        return len(current)

    def multi_get(self, keys: list[str]) -> list[bytes]:
        current = self._wait_for(keys)
        return [current[key] for key in keys]

    def multi_set(self, keys: list[str], values: list[bytes | str]) -> None:
        if len(keys) != len(values):
            raise ValueError("multi_set needs as many values as keys")
        updates = {key: _as_bytes(value) for key, value in zip(keys, values, strict=True)}

        def change(current: _Keys) -> tuple[_Keys | None, None]:
            current.update(updates)
            return current, None

        self._update(change)
